"""Stations: dock doors bound to documents, line scans building a batch's genealogy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from device_profiles.sites import DockParty, WarehouseWork
from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.records import RecordRefused
from edge_agent.stations import MAX_ITEMS, StationError, Stations
from edge_agent.store import EdgeStore
from protocols.gs1 import with_check_digit
from protocols.mqtt.contract import Item, Record

T0 = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
RECORD: TypeAdapter[Record] = TypeAdapter(Record)
FLOUR = Item(
    epc_class="https://id.gs1.org/01/09506000134352/10/FLOUR7",
    gtin="09506000134352",
    lot="FLOUR7",
    quantity=25.0,
    uom="KGM",
)
PALLET = Item(epc="urn:epc:id:sscc:0614141.1234567890", sscc="106141411234567897")


def make(tmp_path: Path) -> tuple[Stations, Outbox]:
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox)
    return Stations(binder, ["line-1"], ["dock-3"]), outbox


def events(outbox: Outbox) -> list[dict]:
    out = [json.loads(b) for _, b in outbox.take(EVENTS, 1000)]
    for event in out:
        RECORD.validate_python(event)  # every event the stations make is contract-valid
    return out


def test_a_door_bound_to_a_po_receives_and_one_bound_to_a_shipment_ships(tmp_path: Path) -> None:
    stations, outbox = make(tmp_path)
    stations.bind_document("dock-3", "po", "PO-77", "clerk")
    stations.dock_event("dock-3", [PALLET], T0, "gate-3", direction="in")
    stations.bind_document("dock-3", "desadv", "SH-9", "clerk")
    stations.dock_event("dock-3", [PALLET], T0, "gate-3", direction="out")
    stations.unbind_document("dock-3")
    got = [
        (e["biz_step"], e["disposition"], e["biz_transactions"], e["flags"]) for e in events(outbox)
    ]
    assert got == [
        ("receiving", "in_progress", [{"type": "po", "id": "PO-77"}], []),
        ("shipping", "in_transit", [{"type": "desadv", "id": "SH-9"}], []),
    ]


def test_reads_at_a_door_bound_to_nothing_are_kept_and_flagged(tmp_path: Path) -> None:
    stations, outbox = make(tmp_path)
    stations.dock_event("dock-3", [PALLET], T0, "gate-3", direction="out")
    stations.dock_event(
        "dock-3", [Item(raw="E280116060", unknown_reason="no EPC header")], T0, "gate-3"
    )
    stations.bind_document("dock-3", "po", "PO-1", "clerk")
    stations.dock_event("dock-3", [PALLET], T0, "gate-3", direction="out")
    flags = [(e["biz_step"], e["flags"]) for e in events(outbox)]
    assert flags == [
        ("shipping", ["no_document"]),
        ("receiving", ["no_document", "no_direction", "unknown_tags"]),
        ("receiving", ["direction_out_against_po"]),
    ]


def test_unknown_dock_and_releasing_an_unbound_door_are_refused(tmp_path: Path) -> None:
    stations, _ = make(tmp_path)
    with pytest.raises(StationError, match="dock 'dock-9' is not on this edge"):
        stations.bind_document("dock-9", "po", "PO-1", "x")
    with pytest.raises(StationError, match="bound to no document"):
        stations.unbind_document("dock-3")


def test_a_batch_links_its_inputs_to_its_outputs_at_its_end(tmp_path: Path) -> None:
    stations, outbox = make(tmp_path)
    stations.set_operator("line-1", "OP-0042")
    stations.scan_batch("line-1", "batch_start", "WO-1001", "scanner-1", T0)
    stations.line_item("line-1", "input", FLOUR, T0, "scanner-1")
    stations.line_item(
        "line-1",
        "input",
        Item(**{**FLOUR.model_dump(), "lot": "FLOUR8", "epc_class": "x:FLOUR8"}),
        T0,
        "scanner-1",
    )
    stations.line_item("line-1", "output", PALLET, T0, "scanner-1")
    stations.scan_batch("line-1", "batch_end", "WO-1001", "scanner-1", T0 + timedelta(hours=1))
    kinds = events(outbox)
    assert [e["kind"] for e in kinds] == ["batch_started", "batch_ended", "transformation_event"]
    assert kinds[0]["by"] == "OP-0042"
    t = kinds[2]
    assert (t["batch"], t["transformation_id"], t["line"]) == ("WO-1001", "WO-1001", "line-1")
    assert [i["lot"] for i in t["inputs"]] == ["FLOUR7", "FLOUR8"]
    assert (
        [Item.model_validate(o) for o in t["outputs"]] == [PALLET]
        and t["operators"] == ["OP-0042"]
        and t["flags"] == []
    )


def test_a_new_batch_label_ends_the_running_batch_first(tmp_path: Path) -> None:
    stations, outbox = make(tmp_path)
    stations.scan_batch("line-1", "batch_start", "WO-1", "s", T0)
    stations.scan_batch("line-1", "batch_start", "WO-1", "s", T0)  # scanned twice: no change
    stations.scan_batch("line-1", "batch_start", "WO-2", "s", T0)
    got = [(e["kind"], e.get("batch")) for e in events(outbox)]
    assert got == [
        ("batch_started", "WO-1"),
        ("batch_ended", "WO-1"),
        ("transformation_event", "WO-1"),
        ("batch_started", "WO-2"),
    ]


def test_a_batch_without_scans_still_closes_with_flags(tmp_path: Path) -> None:
    stations, outbox = make(tmp_path)
    stations.scan_batch("line-1", "batch_start", "WO-7", "s", T0)
    stations.scan_batch("line-1", "batch_end", "WO-7", "s", T0)
    t = events(outbox)[-1]
    assert t["flags"] == ["no_inputs", "output_without_gtin"]
    assert [Item.model_validate(o) for o in t["outputs"]] == [Item(lot="WO-7", raw="WO-7")]


def test_consumption_without_an_active_batch_is_kept_and_flagged(tmp_path: Path) -> None:
    stations, outbox = make(tmp_path)
    stations.line_item("line-1", "input", FLOUR, T0, "scanner-1")
    [event] = events(outbox)
    assert (event["biz_step"], event["flags"], event["items"]) == (
        "consuming",
        ["no_active_batch"],
        [FLOUR.model_dump()],
    )


def test_batch_inputs_survive_a_restart(tmp_path: Path) -> None:
    stations, outbox = make(tmp_path)
    stations.scan_batch("line-1", "batch_start", "WO-5", "s", T0)
    stations.line_item("line-1", "input", FLOUR, T0, "s")
    outbox.store.close()
    again, outbox2 = make(tmp_path)
    again.scan_batch("line-1", "batch_end", "WO-5", "s", T0)
    outbox2.requeue(EVENTS)
    t = next(e for e in events(outbox2) if e["kind"] == "transformation_event")
    assert [i["lot"] for i in t["inputs"]] == ["FLOUR7"]


def test_what_a_batch_end_could_not_carry_is_refused_at_the_scan_so_the_batch_always_ends(
    tmp_path: Path,
) -> None:
    stations, outbox = make(tmp_path)
    stations.scan_batch("line-1", "batch_start", "WO-9", "s", T0)
    stations.line_item("line-1", "input", FLOUR, T0, "s")
    with pytest.raises(RecordRefused, match="operator"):
        stations.set_operator("line-1", "OP-" + "7" * 200)
    with pytest.raises(RecordRefused, match="batch id"):
        stations.scan_batch("line-1", "batch_start", "WO-\x00", "s", T0)
    active = stations.binder.context.active("line-1")
    assert active is not None and active.batch_id == "WO-9"  # not ended for a refused label
    stations.scan_batch("line-1", "batch_end", "WO-9", "s", T0)
    t = events(outbox)[-1]  # contract-valid (events() checks), with the good input only
    assert (t["kind"], [i["lot"] for i in t["inputs"]]) == ("transformation_event", ["FLOUR7"])


def test_a_batch_holds_no_more_inputs_than_its_transformation_event_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stations, outbox = make(tmp_path)
    monkeypatch.setitem(MAX_ITEMS, "input", 3)  # the contract's 10,000, made small
    stations.scan_batch("line-1", "batch_start", "WO-3", "s", T0)
    for _ in range(3):
        stations.line_item("line-1", "input", FLOUR, T0, "s")
    with pytest.raises(RecordRefused, match="already has 3 inputs"):
        stations.line_item("line-1", "input", FLOUR, T0, "s")
    stations.scan_batch("line-1", "batch_end", "WO-3", "s", T0)
    assert len(events(outbox)[-1]["inputs"]) == 3


def test_a_document_id_the_contract_refuses_is_refused_when_bound(tmp_path: Path) -> None:
    stations, _ = make(tmp_path)
    with pytest.raises(RecordRefused, match="document id"):
        stations.bind_document("dock-3", "po", "PO-" + "1" * 200, "clerk")
    assert stations.document("dock-3") is None


# Trading parties: who shipped to whom, from the label read, the door's document, the door's
# configuration, most specific first (each kind of party from the first that names it).
US = with_check_digit("061414100000")  # our company's party GLN
DOOR = with_check_digit("061414100003")  # the dock's own place
SHOP = with_check_digit("950110100000")  # the customer
SHOP_DC = with_check_digit("950110100007")  # the customer's warehouse
MILL = with_check_digit("950220200000")  # a supplier
CONFIGURED = [
    DockParty(side="ours", type="owning_party", gln=US),
    DockParty(side="ours", type="location", gln=DOOR, extension="3"),
]


@pytest.mark.parametrize(
    ("case", "document", "label", "configured", "expected"),
    [
        (
            "configured only, shipping: we are the source",
            ("desadv", []),
            [],
            CONFIGURED,
            [("source", "owning_party", US, None), ("source", "location", DOOR, "3")],
        ),
        (
            "configured only, receiving: we are the destination",
            ("po", []),
            [],
            CONFIGURED,
            [("destination", "owning_party", US, None), ("destination", "location", DOOR, "3")],
        ),
        (
            "the document names the customer's place, the door names us",
            ("desadv", [DockParty(side="destination", type="location", gln=SHOP)]),
            [],
            CONFIGURED,
            [
                ("destination", "location", SHOP, None),
                ("source", "owning_party", US, None),
                ("source", "location", DOOR, "3"),
            ],
        ),
        (
            "the label's ship-to stands before the document's",
            ("desadv", [DockParty(side="destination", type="location", gln=SHOP)]),
            [DockParty(side="destination", type="location", gln=SHOP_DC)],
            [],
            [("destination", "location", SHOP_DC, None)],
        ),
        (
            "a door serving one supplier names it as the source of what it receives",
            ("po", []),
            [],
            [DockParty(side="partner", type="owning_party", gln=MILL)],
            [("source", "owning_party", MILL, None)],
        ),
        ("nothing names anyone", ("po", []), [], [], []),
    ],
)
def test_a_door_event_names_its_trading_parties(
    tmp_path: Path,
    case: str,
    document: tuple[str, list[DockParty]],
    label: list[DockParty],
    configured: list[DockParty],
    expected: list[tuple[str, str, str, str | None]],
) -> None:
    stations, outbox = make(tmp_path)
    stations.parties = {"dock-3": configured}
    doc_type, named = document
    stations.bind_document("dock-3", doc_type, "DOC-1", "clerk", named)  # type: ignore[arg-type]
    stations.dock_event("dock-3", [PALLET], T0, "gate-3", parties=label)
    [event] = events(outbox)
    got = [(p["side"], p["type"], p["gln"], p["extension"]) for p in event.get("parties", [])]
    assert got == expected, case
    assert ("parties" in event) == bool(expected)  # none: the JSON an older collector reads


def test_the_documents_parties_survive_a_restart_and_go_with_its_release(tmp_path: Path) -> None:
    stations, _ = make(tmp_path)
    shop = DockParty(side="destination", type="location", gln=SHOP)
    stations.bind_document("dock-3", "desadv", "SH-1", "clerk", [shop])
    again, _ = make(tmp_path)
    bound = again.document("dock-3")
    assert bound is not None and bound.parties == (shop,)
    again.unbind_document("dock-3")
    again.bind_document("dock-3", "desadv", "SH-2", "clerk")
    rebound = again.document("dock-3")
    assert rebound is not None and rebound.parties == ()


# -- warehouse stations ------------------------------------------------------------------


def warehouse(tmp_path: Path) -> tuple[Stations, Outbox]:
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    binder = Binder(BatchContext(outbox.store, []), outbox)
    work = {
        "wh-putaway": WarehouseWork(step="put_away"),
        "wh-pick": WarehouseWork(step="pick", to="STAGE-1"),
        "wh-count": WarehouseWork(step="count", place="BIN-A-01"),
    }
    return Stations(binder, [], [], warehouse=work), outbox


@pytest.mark.parametrize(
    ("station", "bin_scanned", "step", "read_point", "biz_location"),
    [
        ("wh-putaway", "BIN-B-02", "storing", "wh-putaway", "BIN-B-02"),
        ("wh-pick", "BIN-B-02", "picking", "BIN-B-02", "STAGE-1"),  # from the bin, to staging
        ("wh-count", None, "cycle_counting", "wh-count", "BIN-A-01"),  # its fixed place
        ("wh-count", "BIN-B-02", "cycle_counting", "wh-count", "BIN-B-02"),  # a label wins
    ],
)
def test_a_warehouse_station_makes_the_cbv_event_of_its_step_at_its_place(
    tmp_path: Path,
    station: str,
    bin_scanned: str | None,
    step: str,
    read_point: str,
    biz_location: str,
) -> None:
    stations, outbox = warehouse(tmp_path)
    if bin_scanned is not None:
        stations.bind_place(station, bin_scanned, "scanner:wh")
    stations.warehouse_event(station, [FLOUR], T0, "wh")
    [event] = events(outbox)
    assert (event["biz_step"], event["read_point"], event["biz_location"]) == (
        step, read_point, biz_location,
    )  # fmt: skip
    assert event["flags"] == [] and event["items"][0]["lot"] == "FLOUR7"


def test_goods_scanned_before_any_place_are_kept_and_flagged(tmp_path: Path) -> None:
    stations, outbox = warehouse(tmp_path)
    stations.warehouse_event("wh-putaway", [PALLET], T0, "wh")
    [event] = events(outbox)
    assert event["flags"] == ["no_place"] and event["read_point"] == "wh-putaway"
    assert event.get("biz_location") is None


def test_the_place_a_station_works_at_survives_a_restart(tmp_path: Path) -> None:
    stations, _ = warehouse(tmp_path)
    stations.bind_place("wh-putaway", "BIN-C-03", "scanner:wh")
    again, _ = warehouse(tmp_path)
    assert again.place("wh-putaway") == "BIN-C-03"


def test_a_place_the_contract_refuses_never_binds_and_unknown_stations_are_refused(
    tmp_path: Path,
) -> None:
    stations, _ = warehouse(tmp_path)
    with pytest.raises(RecordRefused, match="place"):
        stations.bind_place("wh-putaway", "BIN A/01", "scanner:wh")
    assert stations.place("wh-putaway") is None
    with pytest.raises(StationError, match="wh-putaway, wh-pick, wh-count"):
        stations.bind_place("dock-3", "BIN-1", "scanner:wh")
