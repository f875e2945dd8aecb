"""What a scan becomes at its station when its text is odd: control characters never reach
a name, and a scan the message contract refuses is counted and kept in the status while the
scanner goes on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_profiles import LIBRARY
from device_profiles.schema import ScannerProfile, load_profile
from device_profiles.sites import WarehouseWork
from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.scans import ScanStation
from edge_agent.stations import Stations
from edge_agent.store import EdgeStore
from protocols.gs1 import with_check_digit
from protocols.scanner.client import Scan
from protocols.scanner.gs1 import parse_scan

T0 = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


def scan(text: str) -> Scan:
    return Scan(text, None, parse_scan(text), None, T0)


def profile(name: str) -> ScannerProfile:
    loaded = load_profile(LIBRARY / name)
    assert isinstance(loaded, ScannerProfile)
    return loaded


@pytest.fixture
def stations(tmp_path: Path) -> Stations:
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    return Stations(Binder(BatchContext(outbox.store, ["line-1"]), outbox), ["line-1"], ["dock-3"])


def events(stations: Stations) -> list[dict]:
    return [json.loads(b) for _, b in stations.outbox.take(EVENTS, 1000)]


def test_a_batch_label_with_nul_padding_and_control_characters_names_the_batch_cleanly(
    stations: Stations,
) -> None:
    line = ScanStation(stations, "line-1", False, profile("scanner-line-station.yaml"))
    line([scan("WO-88\x00\x00\x00"), scan("WO-89\r\x03\x1d")])
    got = [(e["kind"], e["batch"]) for e in events(stations) if e["kind"].startswith("batch")]
    assert got == [("batch_started", "WO-88"), ("batch_ended", "WO-88"), ("batch_started", "WO-89")]


def test_a_scan_the_contract_refuses_is_counted_and_changes_nothing(
    stations: Stations,
) -> None:
    line = ScanStation(stations, "line-1", False, profile("scanner-line-station.yaml"))
    line([scan("WO-1"), scan("WO-" + "9" * 200), scan("WO-2")])  # the scanner goes on
    got = [(e["kind"], e["batch"]) for e in events(stations) if e["kind"].startswith("batch")]
    assert got == [("batch_started", "WO-1"), ("batch_ended", "WO-1"), ("batch_started", "WO-2")]
    assert line.counters.refused == 1
    assert "batch id" in line.counters.last_refused[0]
    assert "at most 128 characters" in line.counters.last_refused[0]


def test_a_document_id_the_contract_refuses_never_binds_the_door(stations: Stations) -> None:
    dock = ScanStation(stations, "dock-3", True, profile("scanner-dock-door.yaml"))
    dock([scan("PO-123"), scan("PO-" + "4" * 200)])
    assert dock.counters.refused == 1 and "document id" in dock.counters.last_refused[0]
    bound = stations.document("dock-3")
    assert bound is not None and bound.doc_id == "PO-123"  # the earlier binding stands


def test_a_gs1_label_with_a_wrong_check_digit_is_a_misread_not_an_unmatched_code(
    stations: Stations,
) -> None:
    line = ScanStation(stations, "line-1", False, profile("scanner-line-station.yaml"))
    line([scan("WO-1"), scan("]C1010950600013435310LOT-7"), scan("WO-2")])
    assert line.counters.misread == 1 and line.counters.unmatched == 0
    assert "check digit" in line.counters.last_misread[0]
    got = [(e["kind"], e["batch"]) for e in events(stations) if e["kind"].startswith("batch")]
    assert got == [("batch_started", "WO-1"), ("batch_ended", "WO-1"), ("batch_started", "WO-2")]


def test_a_despatch_label_and_a_case_label_name_who_shipped_to_whom(stations: Stations) -> None:
    """GS1 AIs on the documents: 410 ship to (the customer's place), 411 bill to (the
    customer), 412 purchased from (the seller), 414 the door's own place (with 254)."""
    shop_dc, shop, us = (
        with_check_digit(x) for x in ("950110100000", "950110100001", "061414100000")
    )
    door, other_dc = with_check_digit("061414100003"), with_check_digit("950110100002")
    gsin = with_check_digit("0614141000000123")
    case = f"(01){with_check_digit('1061414100001')}(10)LOT7"
    dock = ScanStation(stations, "dock-3", True, profile("scanner-dock-door.yaml"))
    dock(
        [
            scan(f"(402){gsin}(410){shop_dc}(411){shop}(412){us}(414){door}(254)D3"),
            scan(case),
            scan(f"{case}(410){other_dc}"),  # a case relabelled for another place
        ]
    )
    assert dock.counters.refused == dock.counters.unmatched == dock.counters.misread == 0
    first, second = (e["parties"] for e in events(stations))
    assert [(p["side"], p["type"], p["gln"], p["extension"]) for p in first] == [
        ("destination", "location", shop_dc, None),
        ("destination", "owning_party", shop, None),
        ("source", "owning_party", us, None),
        ("source", "location", door, "D3"),
    ]
    assert [p["gln"] for p in second if p["type"] == "location"] == [other_dc, door]


def test_a_handheld_scans_a_bin_then_goods_and_each_label_is_put_away_there(
    tmp_path: Path,
) -> None:
    """The library's warehouse handheld at a put-away station: a GS1 location label (GLN +
    extension) and a bin code both name the place; a case label with its expiry (AI 17) is
    put away at the bin scanned last; a work-order label here is a misplaced scan."""
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    binder = Binder(BatchContext(outbox.store, []), outbox)
    stations = Stations(binder, [], [], warehouse={"wh-1": WarehouseWork(step="put_away")})
    handheld = ScanStation(stations, "wh-1", False, profile("scanner-warehouse-handheld.yaml"))
    case = "]C101095060001343521727013110FLOUR7"
    handheld([scan("]C14140614141000005254A0103"), scan(case), scan("BIN-B-02"), scan(case)])
    got = [(e["biz_step"], e["biz_location"], e["items"][0]["expiry"]) for e in events(stations)]
    assert got == [
        ("storing", "0614141000005.A0103", "2027-01-31"),
        ("storing", "BIN-B-02", "2027-01-31"),
    ]
    assert handheld.counters.misplaced == 0
