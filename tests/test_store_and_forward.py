"""Nothing lost, nothing doubled: the broker, the collector, the database and the device go
away and come back, the agent is killed with SIGKILL; afterwards the database holds every
reading the edge took, exactly once, compared row for row with what the device served.

The simulated device counts: every read request it answers carries the next number in its
`counter` register, so the set of counters in the database must be exactly 1..N.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import psycopg
import pytest
import yaml

from cloud_collector.broker_identities import IdentityKind
from cloud_collector.consumer import IngestCounters, run_consumer
from cloud_collector.settings import CollectorSettings
from device_profiles.schema import ModbusTcpProfile, parse_profile
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.modbus.simulator import ModbusSimulator
from protocols.mqtt import topics
from protocols.mqtt.contract import EdgeStatus
from tests.conftest import ROOT, MosquittoProcess, Services, free_port, now_true, until

LINE = "line-1"


def counting_profile(port: int, interval_s: float) -> dict:
    return {
        "profile_version": 1,
        "name": "counter-plc",
        "protocol": "modbus_tcp",
        "connection": {"host": "127.0.0.1", "port": port, "timeout_s": 0.5},
        "poll_interval_s": interval_s,
        "tags": [
            {"name": "counter", "address": 0, "data_type": "uint32"},
            {"name": "temperature", "address": 2, "data_type": "float32", "unit": "Cel"},
        ],
    }


class CountingDevice:
    """A Modbus device whose `counter` register is the number of reads it has answered."""

    def __init__(self, port: int, interval_s: float) -> None:
        profile = parse_profile(counting_profile(port, interval_s))
        assert isinstance(profile, ModbusTcpProfile)
        self.profile = profile
        self.port = port
        self._counter = itertools.count(1)
        self.served = 0
        # The last read answered before a restart: its answer may have been cut with the
        # connection, so the edge never got that number (it polls again after the restart).
        self.answered_at_stop: set[int] = set()
        self.sim = self._new()

    def _new(self) -> ModbusSimulator:
        sim = ModbusSimulator(self.profile, port=self.port)
        sim.set("temperature", 80.0)
        sim.on_read = self._count
        return sim

    def _count(self, function_code: int, address: int, count: int) -> None:
        self.served = next(self._counter)
        self.sim.set("counter", self.served)

    async def restart(self, down_s: float) -> None:
        await self.sim.stop()
        self.answered_at_stop.add(self.served)
        await asyncio.sleep(down_s)
        self.sim = self._new()
        await self.sim.start()


def write_site(folder: Path, edge_id: str, device: CountingDevice) -> Path:
    profile = folder / "counter-plc.yaml"
    profile.write_text(
        yaml.safe_dump(counting_profile(device.port, device.profile.poll_interval_s))
    )
    site = folder / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "edge_id": edge_id,
                "lines": [{"id": LINE, "devices": [{"profile": str(profile)}]}],
            }
        )
    )
    return site


async def counters_in_db(url: str, edge_id: str) -> list[float]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select r.value from readings r join edge_streams s using (stream_id)"
            " where s.edge_id = %s and r.tag = 'counter' order by r.value",
            (edge_id,),
        )
        return [row[0] for row in await cur.fetchall()]


class Collector:
    """The collector's consumer as a task the test can stop and start."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.counters = IngestCounters()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self.task = asyncio.create_task(run_consumer(self.settings, self.counters, ready))
        async with asyncio.timeout(15):
            await ready.wait()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@pytest.fixture
async def outage_collector(
    services: Services, private_broker: MosquittoProcess
) -> AsyncIterator[Collector]:
    collector = Collector(
        CollectorSettings(
            database_url=services.database_url,
            collector_id=f"collector-outage-{uuid.uuid4().hex[:6]}",
            share_group=f"outage-{uuid.uuid4().hex[:6]}",
            backfill_after_s=1.5,
            mqtt=private_broker.broker,
        )
    )
    await collector.start()
    yield collector
    await collector.stop()


async def database_outage(services: Services, seconds: float) -> None:
    """The collector's database refuses connections for a while (its sessions are cut)."""
    db = services.database_url.rsplit("/", 1)[1]
    admin = services.database_url.rsplit("/", 1)[0] + "/postgres"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f"alter database {db} allow_connections false")
        await conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = %s and pid <> pg_backend_pid()"
            " and application_name not like 'pytest-keep%%'",
            (db,),
        )
        try:
            await asyncio.sleep(seconds)
        finally:
            await conn.execute(f"alter database {db} allow_connections true")


async def test_broker_collector_database_and_device_outages_lose_and_double_nothing(
    tmp_path: Path,
    services: Services,
    private_broker: MosquittoProcess,
    outage_collector: Collector,
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    device = CountingDevice(free_port(), interval_s=0.1)
    await device.sim.start()
    settings = EdgeSettings(
        state_dir=tmp_path / "edge",
        mqtt=await private_broker.register(edge_id),
        ack_timeout_s=2.0,
        publish_linger_s=0.05,
    )
    agent = EdgeAgent(settings, load_site(write_site(tmp_path, edge_id, device)))
    task = agent.devices["counter-plc"]
    agent.binder.start_batch(LINE, f"B-{edge_id}", "test")
    running = asyncio.create_task(agent.run(poll=False, control=False))
    polling = asyncio.create_task(task.run())
    try:
        await asyncio.sleep(1.5)

        # The broker goes away; capture goes on into the outbox.
        private_broker.stop()
        await asyncio.sleep(3)
        assert agent.outbox.depth("readings") > 20
        private_broker.start()
        back = datetime.now(UTC)

        async def live_reading_arrived() -> bool:
            async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
                row = await (
                    await conn.execute(
                        "select count(*) from readings r join edge_streams s using (stream_id)"
                        " where s.edge_id = %s and r.time > %s",
                        (edge_id, back),
                    )
                ).fetchone()
                return bool(row and row[0])

        await until(live_reading_arrived, 10, "a reading taken after the broker came back")

        # The collector goes away; the broker queues, the edge resends what is not acked.
        await outage_collector.stop()
        await asyncio.sleep(2)
        await outage_collector.start()

        # The database goes away under the collector.
        await database_outage(services, 2)

        # The device restarts; the gap is recorded and polling resumes by itself.
        await device.restart(down_s=1.0)
        restarted_at = task.health.polls
        # Resumed when the reconnect's backoff (with its jitter) allows: not a fixed time.
        await until(
            lambda: now_true(
                task.health.offline_since is None and task.health.polls > restarted_at
            ),
            15,
            "polling resumed after the device's restart",
        )
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
    polls = task.health.polls
    await until(
        lambda: now_true(agent.outbox.depth("readings") == 0 and agent.outbox.depth("events") == 0),
        30,
        "the outbox drained",
    )
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    agent.close()
    await device.sim.stop()

    counters = await counters_in_db(services.database_url, edge_id)
    assert len(counters) == polls, "each poll the edge completed exactly once"
    assert counters == sorted(set(counters)), "in order, none doubled"
    # Missing only what never reached the edge: an answer cut by the device's restart, and
    # at most the poll cancelled in flight at the end.
    missing = set(range(1, device.served + 1)) - {int(c) for c in counters}
    assert missing <= device.answered_at_stop | {device.served}, sorted(missing)
    assert device.served - polls <= 1 + len(missing & device.answered_at_stop)
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        gaps = await (
            await conn.execute(
                "select stream, first_missing from stream_gaps where edge_id = %s", (edge_id,)
            )
        ).fetchall()
        events = await (
            await conn.execute(
                "select kind from device_events join edge_streams using (stream_id)"
                " where edge_id = %s order by time",
                (edge_id,),
            )
        ).fetchall()
        backfill = await (
            await conn.execute(
                "select bool_or(backfill), bool_and(backfill) from readings"
                " join edge_streams using (stream_id) where edge_id = %s",
                (edge_id,),
            )
        ).fetchone()
    assert gaps == []
    assert [e[0] for e in events] == ["device_offline", "device_online"]
    assert backfill == (True, False)  # the outage's readings, and only some, came late


async def retained_status(broker: MosquittoProcess, edge_id: str, state: str) -> EdgeStatus:
    """The edge's retained status once it says `state` (read as a new subscriber would)."""
    # An identity of its own: connecting as the running collector would take its session.
    reader = await broker.register("status-reader", IdentityKind.collector)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        async with aiomqtt.Client(**reader.client_args()) as client:  # type: ignore[arg-type]
            await client.subscribe(topics.status(edge_id), qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    async for message in client.messages:
                        status = EdgeStatus.model_validate_json(message.payload)  # type: ignore[arg-type]
                        if status.state == state:
                            return status
                        break
        await asyncio.sleep(0.3)
    raise AssertionError(f"edge {edge_id} never showed a retained status {state!r}")


async def test_sigkill_and_restart_of_the_agent_lose_and_double_nothing(
    tmp_path: Path,
    services: Services,
    private_broker: MosquittoProcess,
    outage_collector: Collector,
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    device = CountingDevice(free_port(), interval_s=0.1)
    await device.sim.start()
    site = write_site(tmp_path, edge_id, device)
    identity = await private_broker.register(edge_id)
    env = {
        **os.environ,
        "TRACE_EDGE_STATE_DIR": str(tmp_path / "edge"),
        "TRACE_EDGE_CONTROL_PORT": str(free_port()),
        # Every poll commits before the next: a kill loses at most the poll in flight.
        "TRACE_EDGE_OUTBOX_COMMIT_INTERVAL_S": "0",
        "TRACE_MQTT_HOST": "127.0.0.1",
        "TRACE_MQTT_PORT": str(private_broker.port),
        "TRACE_MQTT_USERNAME": edge_id,
        "TRACE_MQTT_PASSWORD": identity.password or "",
    }

    def start_agent() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "--site", str(site)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "agent.log", "ab"),
        )

    kills = 0
    agent = start_agent()
    try:
        for _ in range(2):
            # Killed while it runs, not while it is still starting (slow on a loaded machine).
            await retained_status(private_broker, edge_id, "online")
            await asyncio.sleep(1.0)
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait()
            kills += 1
            # The broker announces the death with the edge's last will, retained.
            status = await retained_status(private_broker, edge_id, "offline")
            assert status.edge_id == edge_id
            agent = start_agent()
        online = await retained_status(private_broker, edge_id, "online")
        assert online.outbox_depth is not None and online.version
        await asyncio.sleep(2.0)
        await device.sim.stop()  # no more polls: what was served is final
        served = device.served

        async def settled() -> bool:
            values = await counters_in_db(services.database_url, edge_id)
            return len(values) >= served - kills and values == sorted(set(values))

        await until(settled, 30, f"the database holds the {served} served polls less the killed")
        await asyncio.sleep(1.0)  # anything still arriving would be a double
    finally:
        agent.terminate()
        agent.wait(10)
    counters = await counters_in_db(services.database_url, edge_id)
    assert len(counters) == len(set(counters)), "no reading twice"
    assert set(counters) <= {float(n) for n in range(1, served + 1)}
    missing = sorted({float(n) for n in range(1, served + 1)} - set(counters))
    assert len(missing) <= kills, f"only the poll in flight at each kill may be lost: {missing}"
