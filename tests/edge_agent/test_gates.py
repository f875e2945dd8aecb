"""An RFID gate whose reader reports a tag the message contract cannot carry: that tag is
counted and logged, the other tags of the door's event still go, and the gate goes on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device_profiles import LIBRARY
from device_profiles.schema import RfidReaderProfile, load_profile
from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.gates import GateStation
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.stations import Stations
from edge_agent.store import EdgeStore
from protocols.rfid.records import TagRead

T0 = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
PALLET = "3074257BF7194E4000001A85"
TOO_LONG = "30" * 100  # 200 hex digits: more than an EPC the contract carries


def test_a_tag_the_contract_refuses_is_counted_and_the_door_event_keeps_the_others(
    tmp_path: Path,
) -> None:
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    stations = Stations(Binder(BatchContext(outbox.store, []), outbox), [], ["dock-1"])
    profile = load_profile(LIBRARY / "rfid-dock-door-gate.yaml")
    assert isinstance(profile, RfidReaderProfile)
    gate = GateStation(stations, "dock-1", profile)
    antenna = profile.antennas[0].port
    gate([TagRead(epc, antenna, -50.0, None, T0) for epc in (PALLET, TOO_LONG)])
    gate.tick(T0 + timedelta(seconds=profile.window_s + 1))
    [event] = [json.loads(b) for _, b in outbox.take(EVENTS, 10)]
    assert [i["raw"] for i in event["items"]] == [PALLET]
    assert gate.refused == 1
    assert gate.last_refused is not None and TOO_LONG[:20] in gate.last_refused
    gate([TagRead(PALLET, antenna, -50.0, None, T0 + timedelta(seconds=60))])  # goes on
    gate.tick(T0 + timedelta(seconds=120))
    assert len(outbox.take(EVENTS, 10)) == 1
