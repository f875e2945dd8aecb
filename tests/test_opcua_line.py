"""An OPC UA reactor line end to end: the PLC's batch id tag drives the batches, the
subscription's values keep their source timestamps and status codes, and after the PLC
restarts the session and subscription come back by themselves with the gap recorded."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import yaml

from device_profiles import LIBRARY
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.opcua.simulator import ReactorSimulator
from tests.conftest import RunningCollector, Services, free_port, until

PROFILE = LIBRARY / "opcua-reactor-plc.yaml"


async def rows(url: str, sql: str, *args: object) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await (await conn.execute(sql, args)).fetchall()


async def test_reactor_line_over_opc_ua(
    tmp_path: Path, services: Services, collector: RunningCollector
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    batch = f"R1-{uuid.uuid4().hex[:6]}"
    port = free_port()
    plc = ReactorSimulator(port=port)
    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "edge_id": edge_id,
                "lines": [
                    {
                        "id": "reactor-1",
                        "devices": [
                            {
                                "profile": str(PROFILE),
                                "connection": {"endpoint": plc.endpoint, "timeout_s": 2.0},
                            },
                        ],
                    }
                ],
            }
        )
    )
    settings = EdgeSettings(
        state_dir=tmp_path / "edge", mqtt=await services.register(edge_id), publish_linger_s=0.05
    )
    agent = EdgeAgent(settings, load_site(site))
    stamp = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    await plc.start()
    running = asyncio.create_task(agent.run(control=False))
    url = services.database_url
    q_tag = (
        "select r.value, r.quality, r.device_time, r.batch_id, r.detail from readings r"
        " join edge_streams s using (stream_id) where s.edge_id = %s and r.tag = %s order by r.time"
    )
    try:
        await until(lambda: _ready(agent), 15, "the subscription delivered its initial values")
        await plc.set("Reactor1.BatchId", batch)
        await asyncio.sleep(1.5)  # the batch change travels before the values it binds
        await plc.set("Reactor1.Temperature", 71.25, source_time=stamp)
        # (A tag without deadband: asyncua's server cannot apply one to a bad value.)
        await plc.set("Reactor1.AgitatorSpeed", 0.0, status="BadSensorFailure", source_time=stamp)

        async def arrived() -> list[tuple]:
            got = await rows(url, q_tag, edge_id, "temperature")
            return [r for r in got if r[0] == 71.25]

        [(_, quality, device_time, bound, _)] = await until(arrived, 15, "71.25 Cel stored")
        assert (quality, device_time, bound) == ("good", stamp, batch)
        bad = await until(
            lambda: _bad(url, q_tag, edge_id), 15, "the agitator's bad status stored as bad"
        )
        assert bad[0][0] is None and "BadSensorFailure" in bad[0][4] and bad[0][3] == batch

        # The PLC restarts: the gap is recorded, the subscription resumes by itself.
        await plc.stop()
        await asyncio.sleep(2.0)
        await plc.start()
        after = stamp + timedelta(minutes=1)
        await asyncio.sleep(1.0)
        await plc.set("Reactor1.Temperature", 73.5, source_time=after)

        async def resumed() -> list[tuple]:
            return [r for r in await rows(url, q_tag, edge_id, "temperature") if r[0] == 73.5]

        await until(resumed, 30, "a value set after the PLC restart stored")
        await plc.set("Reactor1.BatchId", "")  # the PLC says the line is idle: batch ends
        events = await until(lambda: _events(url, edge_id, 2), 15, "offline and online events")
        assert [e[0] for e in events] == ["device_offline", "device_online"]
        batches = await until(lambda: _ended(url, batch), 15, "the batch ended by the PLC")
        assert batches[0] == ("plc:reactor-plc-1/batch_id", "plc:reactor-plc-1/batch_id")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        agent.close()
        await plc.stop()
    # The batch id tag is not a reading.
    assert await rows(url, q_tag, edge_id, "batch_id") == []


async def _ready(agent: EdgeAgent) -> bool:
    return agent.devices["reactor-plc-1"].health.readings > 0


async def _bad(url: str, sql: str, edge_id: str) -> list[tuple]:
    return [r for r in await rows(url, sql, edge_id, "agitator_speed") if r[1] == "bad"]


async def _events(url: str, edge_id: str, n: int) -> list[tuple] | None:
    got = await rows(
        url,
        "select kind from device_events join edge_streams using (stream_id)"
        " where edge_id = %s order by time",
        edge_id,
    )
    return got if len(got) >= n else None


async def _ended(url: str, batch: str) -> list[tuple] | None:
    got = await rows(
        url,
        "select started_by, ended_by from batches where batch_id = %s and ended_at is not null",
        batch,
    )
    return got or None
