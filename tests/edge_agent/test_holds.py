"""The edge's list of held lots: kept from the collector's hold sets (newer only, hostile
bytes refused), kept across a restart, matched by lot, SSCC and EPC; a shipping door flags
what is held, a receiving door does not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.holds import HeldLots
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.publisher import _refused
from edge_agent.stations import Stations
from edge_agent.store import EdgeStore
from protocols.mqtt.contract import HeldLot, HoldSet, Item

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
GTIN = "10614141000019"
CASE = Item(gtin=GTIN, lot="L-7", raw="(01)10614141000019(10)L-7")
PALLET = Item(epc="urn:epc:id:sscc:0614141.1234567890", sscc="106141411234567897")
SGTIN = Item(epc="urn:epc:id:sgtin:0614141.812345.6789")
OTHER = Item(gtin=GTIN, lot="L-8", raw="(01)10614141000019(10)L-8")


def hold_set(time: datetime, *lots: HeldLot) -> bytes:
    return HoldSet(time=time, lots=list(lots)).model_dump_json().encode()


HELD = HeldLot(
    gtin=GTIN,
    lot="L-7",
    reason="complaint",
    since=T0,
    epcs=[SGTIN.epc or ""],
    ssccs=[PALLET.sscc or ""],
)


def test_a_hold_set_is_kept_across_a_restart_and_matched_by_every_key(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "e.db")
    held = HeldLots(store)
    assert held.apply(hold_set(T0, HELD))
    store.close()

    again = HeldLots(EdgeStore(tmp_path / "e.db"))  # offline after a restart: still known
    assert again.health.lots == 1
    matched = again.match([CASE, PALLET, SGTIN, OTHER])
    assert [m.item for m in matched] == [CASE, PALLET, SGTIN]
    assert {(m.lot, m.reason) for m in matched} == {("L-7", "complaint")}


def test_a_lot_of_unknown_product_matches_by_its_lot_code(tmp_path: Path) -> None:
    held = HeldLots(EdgeStore(tmp_path / "e.db"))
    held.apply(hold_set(T0, HeldLot(gtin="", lot="L-8", reason="r", since=T0)))
    assert [m.item for m in held.match([CASE, OTHER])] == [OTHER]


def test_older_sets_and_hostile_bytes_change_nothing(tmp_path: Path) -> None:
    held = HeldLots(EdgeStore(tmp_path / "e.db"))
    assert held.apply(hold_set(T0, HELD))
    assert not held.apply(hold_set(T0 - timedelta(seconds=1)))  # late: the older empty set
    assert not held.apply(hold_set(T0))  # the same again
    bad = json.loads(hold_set(T0 + timedelta(seconds=1), HELD))
    for garbage in (
        b"\xff\xfe",
        b"not json",
        json.dumps(bad | {"extra": 1}).encode(),
        json.dumps(bad | {"time": "2026-12-02T09:00:00"}).encode(),  # no UTC offset
        json.dumps({**bad, "lots": [{**bad["lots"][0], "gtin": "123"}]}).encode(),
    ):
        assert not held.apply(garbage)
    assert held.health.ignored == 7 and held.health.last_ignored
    assert [m.item for m in held.match([CASE])] == [CASE]
    assert held.apply(hold_set(T0 + timedelta(seconds=2)))  # released: a newer, empty set
    assert held.match([CASE, PALLET, SGTIN]) == []


def test_a_shipping_door_flags_a_held_lot_and_a_receiving_door_does_not(tmp_path: Path) -> None:
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    held = HeldLots(outbox.store)
    held.apply(hold_set(T0, HELD))
    stations = Stations(Binder(BatchContext(outbox.store, []), outbox), [], ["dock-3"], held)
    stations.bind_document("dock-3", "desadv", "SH-9", "clerk")
    stations.dock_event("dock-3", [PALLET, OTHER], T0, "gate-3", direction="out")
    stations.dock_event("dock-3", [OTHER], T0, "gate-3", direction="out")
    stations.bind_document("dock-3", "po", "PO-1", "clerk")
    stations.dock_event("dock-3", [CASE], T0, "gate-3", direction="in")
    stations.unbind_document("dock-3")
    stations.dock_event("dock-3", [CASE], T0, "scanner-3", meaning="ship")
    flags = [json.loads(b)["flags"] for _, b in outbox.take(EVENTS, 100)]
    assert flags == [["held_lot"], [], [], ["no_document", "held_lot"]]
    alarms = held.alarms(T0)
    assert len(alarms) == 2 and "HELD LOT at dock-3 against desadv SH-9" in alarms[0]
    assert "106141411234567897" in alarms[0] and "complaint" in alarms[0]
    assert held.alarms(T0 + timedelta(hours=2)) == []  # an hour later: out of the status


def test_a_refused_subscription_is_told_not_taken_for_granted() -> None:
    granted = ReasonCode(PacketTypes.SUBACK, identifier=1)
    refused = ReasonCode(PacketTypes.SUBACK, identifier=0x87)  # not authorized (ACL)
    assert [_refused(c) for c in (granted, refused, 1, 0x80)] == [False, True, False, True]
