"""The collector's keeper of edge statuses on the real broker and database: a real edge's
status arrives with its lines and devices; the broker's last will marks it offline and a
late status of the dead connection does not bring it back; hostile statuses are counted,
kept as dead letters and never replace the status stored; unregistered edges store nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest
from psycopg.rows import dict_row

from cloud_collector import edge_status
from cloud_collector.broker_identities import IdentityKind
from cloud_collector.edge_status import EdgeStatusSettings, KeeperCounters
from device_profiles.schema import load_profile
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.modbus.simulator import ModbusSimulator
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import EdgeStatus
from tests.conftest import ROOT, RunningCollector, Services, free_port, now_true, until
from tests.test_end_to_end import PROFILE, write_site


@pytest.fixture(scope="module")
async def keeper(services: Services, collector: RunningCollector) -> AsyncIterator[KeeperCounters]:
    """The keeper, running in this event loop under an identity of its own."""
    identity = await services.register(f"edge-status-test-{os.getpid()}", IdentityKind.collector)
    settings = EdgeStatusSettings(
        username=identity.username, password=identity.password, max_bytes=64 * 1024
    )
    counters = KeeperCounters()
    ready = asyncio.Event()
    task = asyncio.create_task(
        edge_status.keep_edge_status(collector.settings, settings, counters, ready)
    )
    async with asyncio.timeout(20):
        await ready.wait()
    yield counters
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def row(database_url: str, edge_id: str) -> dict[str, Any] | None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute("select * from edge_status where edge_id = %s", (edge_id,))
        return await cur.fetchone()


async def publish(broker: BrokerSettings, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client(
        **broker.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.publish(topic, payload, qos=1, retain=True)


def status(edge_id: str, state: str = "online", **fields: Any) -> EdgeStatus:
    return EdgeStatus(edge_id=edge_id, state=state, time=datetime.now(UTC), **fields)


async def test_a_real_edge_shows_its_lines_devices_and_values(
    tmp_path: Path, services: Services, collector: RunningCollector, keeper: KeeperCounters
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    batch_id = f"B-{uuid.uuid4().hex[:8]}"
    port = free_port()
    sim = ModbusSimulator(load_profile(PROFILE), port=port)
    settings = EdgeSettings(
        state_dir=tmp_path / "state",
        mqtt=await services.register(edge_id),
        publish_linger_s=0.05,
        status_interval_s=0.2,
    )
    agent = EdgeAgent(settings, load_site(write_site(tmp_path, edge_id, port)))
    device = agent.devices["tp-controller-1"]
    async with sim, collector.client() as api:
        running = asyncio.create_task(agent.run(poll=False, control=False))
        try:
            await device.connect()
            agent.binder.start_batch("line-1", batch_id, "op-7")
            sim.set("temperature", 72.5)
            await device.poll_once()

            async def shown() -> dict[str, Any] | None:
                r = await api.get(f"/api/v1/edges/{edge_id}")
                body: dict[str, Any] = r.json()
                s = body.get("status") or {}
                values = [v for d in s.get("devices", []) for v in d["values"]]
                return body if any(v["tag"] == "temperature" for v in values) else None

            body = await until(shown, 20, f"edge {edge_id} with its values in GET /api/v1/edges")
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await device.driver.close()
            agent.close()
    assert body["state"] == "online" and body["registered"] is True
    s = body["status"]
    assert s["version"] and s["outbox_depth"] is not None and s["interval_s"] == 0.2
    assert s["lines"] == [
        {"line": "line-1", "batch": batch_id, "batch_started_at": s["lines"][0]["batch_started_at"]}
    ]
    (plc,) = s["devices"]
    assert plc["device"] == "tp-controller-1" and plc["station"] == "line-1" and plc["connected"]
    temperature = next(v for v in plc["values"] if v["tag"] == "temperature")
    assert temperature["value"] == 72.5 and temperature["unit"] == "Cel"
    listed = (await collector.client().get("/api/v1/edges")).json()
    assert edge_id in [e["edge_id"] for e in listed["edges"]]

    # The agent was stopped, not killed: it said offline itself (no will on a clean exit).
    async def offline() -> bool:
        found = await row(services.database_url, edge_id)
        return bool(found and found["state"] == "offline")

    await until(offline, 10, "the stopped edge offline")


EDGE_THAT_DIES = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    import aiomqtt
    from protocols.mqtt import topics
    from protocols.mqtt.connection import BrokerSettings
    from protocols.mqtt.contract import EdgeStatus

    async def main():
        broker = BrokerSettings.model_validate_json(sys.argv[1])
        edge, session = broker.username, datetime.now(UTC)
        will = EdgeStatus(edge_id=edge, state="offline", time=session, session=session)
        async with aiomqtt.Client(
            **broker.client_args(), protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(topics.status(edge), will.model_dump_json(), qos=1, retain=True),
        ) as client:
            online = EdgeStatus(edge_id=edge, state="online", time=datetime.now(UTC),
                                session=session, outbox_depth=5)
            await client.publish(topics.status(edge), online.model_dump_json(), qos=1, retain=True)
            print(session.isoformat(), flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_the_last_will_marks_it_offline_and_a_late_status_does_not_revive_it(
    services: Services, keeper: KeeperCounters
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    broker = await services.register(edge_id)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        EDGE_THAT_DIES,
        broker.model_dump_json(),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        session = datetime.fromisoformat(line.decode().strip())

        async def state(wanted: str) -> dict[str, Any] | None:
            found = await row(services.database_url, edge_id)
            return found if found and found["state"] == wanted else None

        online = await until(lambda: state("online"), 20, "the edge online")
        assert online["session"] == session
        proc.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sends the will
        offline = await until(lambda: state("offline"), 30, "the edge offline by its will")
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    assert offline["state_since"] is not None  # seen changing, not read at a restart
    assert offline["status"]["outbox_depth"] == 5  # the last online status stays beside it

    # A status of the dead connection arriving late (another collector, a retry) is older.
    superseded = keeper.superseded
    late = status(edge_id, session=session, outbox_depth=9)
    await publish(broker, topics.status(edge_id), late.model_dump_json().encode())
    await until(lambda: now_true(keeper.superseded > superseded), 10, "the late status seen")
    assert (await row(services.database_url, edge_id) or {})["state"] == "offline"

    # A new connection is newer than the will of the old one.
    again = status(edge_id, session=session + timedelta(seconds=1), outbox_depth=0)
    await publish(broker, topics.status(edge_id), again.model_dump_json().encode())
    back = await until(lambda: state("online"), 10, "the edge online again")
    assert back["status"]["outbox_depth"] == 0


async def test_hostile_statuses_are_counted_kept_and_change_nothing(
    services: Services, keeper: KeeperCounters
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    broker = await services.register(edge_id)
    topic = topics.status(edge_id)
    good = status(edge_id, outbox_depth=3, session=datetime.now(UTC))
    await publish(broker, topic, good.model_dump_json().encode())
    await until(lambda: row(services.database_url, edge_id), 10, "the good status stored")
    refused = keeper.refused
    hostile = [
        b"\xff\xfe not json",
        b'{"edge_id": "' + edge_id.encode() + b'", "state": "online", "time": 1, "x": 1}',
        status("someone-else").model_dump_json().encode(),
        b"[" * 100_000,
        b" " * (64 * 1024 + 1),  # over the keeper's max_bytes
    ]
    for payload in hostile:
        await publish(broker, topic, payload)
    await until(
        lambda: now_true(keeper.refused >= refused + len(hostile)), 20, "every hostile one counted"
    )
    stored = await row(services.database_url, edge_id)
    assert stored is not None
    assert stored["state"] == "online" and stored["status"]["outbox_depth"] == 3
    assert stored["refused"] == len(hostile)
    assert "over TRACE_EDGE_STATUS_MAX_BYTES" in stored["last_refused_reason"]
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        cur = await conn.execute(
            "select count(*), max(length(payload)) from dead_letters where topic = %s", (topic,)
        )
        kept, longest = await cur.fetchone() or (0, 0)
    assert kept == len(hostile)
    assert longest <= 64 * 1024  # the oversized ones are kept cut to their first 64 KiB
    # The keeper goes on: the next good status is stored.
    newer = status(edge_id, outbox_depth=4, session=good.session)
    await publish(broker, topic, newer.model_dump_json().encode())

    async def depth_4() -> bool:
        found = await row(services.database_url, edge_id)
        return bool(found and found["status"]["outbox_depth"] == 4)

    await until(depth_4, 10, "the next good status stored")


async def test_a_status_from_an_unregistered_edge_stores_nothing(services: Services) -> None:
    """The registry is in use in the test database: an edge it does not hold is ignored
    (the broker would refuse it too; a broker without ACLs would not)."""
    edge_id = f"stranger-{uuid.uuid4().hex[:8]}"
    counters = KeeperCounters()
    async with await psycopg.AsyncConnection.connect(
        services.database_url, autocommit=True
    ) as conn:
        await edge_status.handle(
            conn,
            topics.status(edge_id),
            status(edge_id).model_dump_json().encode(),
            False,
            counters,
            EdgeStatusSettings(),
            edge_status._Logged(),
        )
    assert counters.unregistered == 1 and counters.stored == 0
    assert await row(services.database_url, edge_id) is None


async def test_the_will_of_an_old_connection_does_not_take_a_new_one_offline(
    services: Services,
) -> None:
    """Two collectors may write the same statuses in different orders."""
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    await services.register(edge_id)
    s1 = datetime.now(UTC) - timedelta(minutes=5)
    s2 = s1 + timedelta(minutes=1)
    old_will = EdgeStatus(edge_id=edge_id, state="offline", time=s1, session=s1)
    new_online = status(edge_id, session=s2)
    async with await psycopg.AsyncConnection.connect(
        services.database_url, autocommit=True
    ) as conn:
        assert await edge_status.store(conn, new_online, retained=False)
        assert not await edge_status.store(conn, old_will, retained=False)
        assert not await edge_status.store(conn, status(edge_id, session=s1), retained=False)
    stored = await row(services.database_url, edge_id)
    assert stored is not None and stored["state"] == "online" and stored["session"] == s2
