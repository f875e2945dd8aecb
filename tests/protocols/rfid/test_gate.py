"""The gate's collapse, direction and windows, as data (gate_cases.yaml)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from device_profiles.schema import RfidReaderProfile, parse_profile
from protocols.rfid.gate import Gate, Observation
from protocols.rfid.records import TagRead

CASES = yaml.safe_load((Path(__file__).parent / "gate_cases.yaml").read_text())
T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
ANTENNAS = [
    {"port": 1, "read_point": "dock-3", "side": "outside"},
    {"port": 2, "read_point": "dock-3", "side": "inside"},
    {"port": 3, "read_point": "dock-4"},
]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def gate_profile(**settings: Any) -> RfidReaderProfile:
    profile = parse_profile(
        {
            "profile_version": 1,
            "name": "dock-gate",
            "protocol": "rfid_serial",
            "connection": {"port": "/dev/ttyUSB0"},
            "framing": "mercury",
            "antennas": ANTENNAS,
            **settings,
        }
    )
    assert isinstance(profile, RfidReaderProfile)
    return profile


def as_case(o: Observation) -> dict[str, Any]:
    d = asdict(o)
    return {
        "epc": d["epc_hex"],
        "read_point": d["read_point"],
        "first": (o.first_seen - T0).total_seconds(),
        "last": (o.last_seen - T0).total_seconds(),
        "count": o.count,
        "best_rssi": o.best_rssi_dbm,
        "antennas": list(o.antennas),
        "direction": o.direction,
    }


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_gate_case(case: dict[str, Any]) -> None:
    settings = {k: case[k] for k in ("window_s", "min_rssi_dbm") if k in case}
    gate = Gate(gate_profile(**settings))
    for step in case["steps"]:
        if "add" in step:
            reads = [TagRead(epc, port, rssi, None, at(t)) for t, epc, port, rssi in step["add"]]
            out = gate.add(reads)
        else:
            out = gate.flush(at(step["flush"]))
        assert [as_case(o) for o in out] == step["expect"]
    if "counters" in case:
        assert asdict(gate.counters) == case["counters"]
    if "unknown_ports" in case:
        assert gate.unknown_ports == case["unknown_ports"]


def test_close_all_hands_out_every_open_window() -> None:
    gate = Gate(gate_profile(window_s=60))
    gate.add([TagRead("3074257BF7194E4000001A85", 1, -60.0, None, at(0))])
    assert [o.count for o in gate.close_all()] == [1]
    assert gate.close_all() == []
