"""An RFID gate whose reader reports a tag the message contract cannot carry: that tag is
counted and logged, the other tags of the door's event still go, and the gate goes on. An
RFID reader at a production line feeds the line's active batch."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from device_profiles import LIBRARY
from device_profiles.schema import RfidReaderProfile, load_profile
from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.gates import GateStation
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.stations import Stations
from edge_agent.store import EdgeStore
from protocols.mqtt.connection import BrokerSettings
from protocols.rfid.records import TagRead, TagRecord
from protocols.rfid.simulator import RfidReaderSimulator
from protocols.serial_link import SerialLink
from tests.conftest import free_port, now_true, running_agent, until

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


INPUT_PALLET = bytes.fromhex("3114257BF4499602D2000000")  # SSCC 106141412345678908
OUTPUT_CASE = bytes.fromhex("3074257BF7194E4000001A85")  # SGTIN 0614141.812345.6789


async def _reads(reader: RfidReaderSimulator, epc: bytes, antenna: int, times: int = 5) -> None:
    for _ in range(times):
        await reader.send(TagRecord(epc=epc, antenna=antenna, rssi_dbm=-50))
        await asyncio.sleep(0.02)


def _events(outbox: Outbox) -> list[dict[str, Any]]:
    taken = outbox.take(EVENTS, 100)
    return [json.loads(body) for _, body in taken]


async def test_a_reader_at_a_line_feeds_the_active_batch(tmp_path: Path) -> None:
    """Through the real runtime and a Mercury reader on a pseudo-terminal: a pallet read at
    the infeed is an input the active batch consumed, a case read at the outfeed an output
    it produced, each once however often read; a tag read while the line is idle is kept,
    flagged, once."""
    async with SerialLink() as link, RfidReaderSimulator("mercury", link.device_port) as reader:
        profile = yaml.safe_load((LIBRARY / "rfid-line-feed.yaml").read_text())
        profile["connection"]["port"] = link.edge_port
        profile["window_s"] = 0.3
        (tmp_path / "reader.yaml").write_text(yaml.safe_dump(profile))
        site = tmp_path / "site.yaml"
        site.write_text(
            yaml.safe_dump(
                {
                    "edge_id": "edge-1",
                    "lines": [{"id": "line-1", "devices": [{"profile": "reader.yaml"}]}],
                }
            )
        )
        nowhere = BrokerSettings(host="127.0.0.1", port=free_port())  # the outbox keeps all
        async with running_agent(site, tmp_path / "state", nowhere) as agent:
            await reader.wait_started()
            for _ in range(2):  # two windows apart: still one idle event
                await _reads(reader, INPUT_PALLET, 1)
                await asyncio.sleep(0.8)
            idle = await until(lambda: now_true(_events(agent.outbox)), 10, "the idle read")
            agent.binder.start_batch("line-1", "B-1", "operator-7")
            for _ in range(2):  # read again in the batch: consumed once
                await _reads(reader, INPUT_PALLET, 1)
                await asyncio.sleep(0.8)
            await _reads(reader, OUTPUT_CASE, 2)
            await asyncio.sleep(0.8)
            await until(
                lambda: now_true(len(_stored(agent, "line-1", "B-1")) == 2), 10, "both units"
            )
            agent.binder.end_batch("line-1", "operator-7")
            events = _events(agent.outbox)
    [flagged] = idle
    assert (flagged["biz_step"], flagged["flags"]) == ("consuming", ["no_active_batch"])
    assert flagged["items"][0]["sscc"] == "106141412345678908"
    [done] = [e for e in events if e.get("transformation_id") == "B-1"]
    assert [i["sscc"] for i in done["inputs"]] == ["106141412345678908"]
    assert [i["epc"] for i in done["outputs"]] == ["urn:epc:id:sgtin:0614141.812345.6789"]
    assert "no_inputs" not in done["flags"] and done["line"] == "line-1"


def _stored(agent: Any, line: str, batch: str) -> list[tuple[str, str]]:
    return list(
        agent.store.db.execute(
            "select role, item from batch_items where line_id = ? and batch_id = ?",
            (line, batch),
        ).fetchall()
    )
