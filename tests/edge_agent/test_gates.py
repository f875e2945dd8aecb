"""An RFID gate whose reader reports a tag the message contract cannot carry: that tag is
counted and logged, the other tags of the door's event still go, and the gate goes on. An
RFID reader at a production line feeds the line's active batch; one at a warehouse station
makes the station's event."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from device_profiles import LIBRARY
from device_profiles.schema import RfidReaderProfile, load_profile
from device_profiles.sites import WarehouseWork
from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.gates import GateStation, WarehouseReaderStation
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


async def test_readers_at_warehouse_stations_store_and_count_what_they_read(
    tmp_path: Path,
) -> None:
    """Through the real runtime and two Mercury readers on pseudo-terminals: the tags a
    put-away station's reader sees in one window, each however often read, are one storing
    event at the station's place; those a count station's reader sees are cycle_counting
    there."""
    async with (
        SerialLink() as put_link,
        SerialLink() as count_link,
        RfidReaderSimulator("mercury", put_link.device_port) as put_reader,
        RfidReaderSimulator("mercury", count_link.device_port) as count_reader,
    ):
        profile = yaml.safe_load((LIBRARY / "rfid-warehouse-portal.yaml").read_text())
        profile["window_s"] = 0.5
        for name, link in (("put", put_link), ("count", count_link)):
            profile["name"], profile["connection"]["port"] = f"wh-{name}-rfid", link.edge_port
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(profile))
        stations = [
            {
                "id": "wh-put",
                "step": "put_away",
                "place": "BIN-A-01",
                "devices": [{"profile": "put.yaml"}],
            },
            {
                "id": "wh-count",
                "step": "count",
                "place": "BIN-B-02",
                "devices": [{"profile": "count.yaml"}],
            },
        ]
        site = tmp_path / "site.yaml"
        site.write_text(yaml.safe_dump({"edge_id": "edge-1", "warehouse": stations}))
        nowhere = BrokerSettings(host="127.0.0.1", port=free_port())  # the outbox keeps all
        async with running_agent(site, tmp_path / "state", nowhere) as agent:
            await put_reader.wait_started()
            await count_reader.wait_started()
            await asyncio.gather(
                _reads(put_reader, INPUT_PALLET, 1),
                _reads(put_reader, OUTPUT_CASE, 1),
                _reads(count_reader, OUTPUT_CASE, 1),
            )
            taken: list[dict[str, Any]] = []

            async def both() -> bool:
                taken.extend(_events(agent.outbox))
                return len(taken) >= 2

            await until(both, 15, "one event per station")
            await asyncio.sleep(1.5)  # a window and a tick more: nothing split off late
            taken.extend(_events(agent.outbox))
    by_step = {e["biz_step"]: e for e in taken}
    assert sorted(by_step) == ["cycle_counting", "storing"] and len(taken) == 2
    stored, counted = by_step["storing"], by_step["cycle_counting"]
    assert (stored["read_point"], stored["biz_location"], stored["flags"]) == (
        "wh-put",
        "BIN-A-01",
        [],
    )
    assert sorted(i.get("sscc") or i["epc"] for i in stored["items"]) == [
        "106141412345678908",
        "urn:epc:id:sgtin:0614141.812345.6789",
    ]
    assert [s["count"] for s in stored["sightings"]] == [5, 5]
    assert (counted["biz_location"], counted["device"]) == ("BIN-B-02", "wh-count-rfid")
    assert [i["epc"] for i in counted["items"]] == ["urn:epc:id:sgtin:0614141.812345.6789"]


def test_a_warehouse_reader_makes_one_event_of_the_tags_read_together(tmp_path: Path) -> None:
    """Each tag's window closes on its own; those first read within one window of the first
    wait for each other and go as one event, a tag read after that window in the next."""
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    work = {"wh-put": WarehouseWork(step="put_away", place="BIN-A-01")}
    stations = Stations(Binder(BatchContext(outbox.store, []), outbox), [], [], warehouse=work)
    profile = load_profile(LIBRARY / "rfid-warehouse-portal.yaml")
    assert isinstance(profile, RfidReaderProfile)
    reader = WarehouseReaderStation(stations, "wh-put", profile)
    window = timedelta(seconds=profile.window_s)
    pallet, case, later = INPUT_PALLET.hex().upper(), PALLET, "3074257BF7194E4000001A86"
    for epc, at in ((pallet, T0), (case, T0 + window / 2), (later, T0 + window * 1.2)):
        reader([TagRead(epc, 1, -50.0, None, at), TagRead(epc, 1, -50.0, None, at)])
    reader.tick(T0 + window * 1.1)  # the pallet's window closed, the case's not yet
    assert outbox.take(EVENTS, 10) == []
    reader.tick(T0 + window * 1.6)
    [first] = [json.loads(b) for _, b in outbox.take(EVENTS, 10)]
    assert [i["raw"] for i in first["items"]] == [pallet, case]
    assert [s["count"] for s in first["sightings"]] == [2, 2]
    reader.tick(T0 + window * 2.3)
    [second] = [json.loads(b) for _, b in outbox.take(EVENTS, 10)]
    assert [i["raw"] for i in second["items"]] == [later]
    assert (second["biz_step"], second["biz_location"]) == ("storing", "BIN-A-01")
