"""Two collector processes share the edges' messages; one is killed with SIGKILL while it
holds messages it has not committed. The broker drops them with its clean session, its
will says it is offline, the edge sends what it had in flight again at once, and the living
collector commits everything: well before the edge's ack timeout, nothing lost, nothing
doubled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import psycopg

from cloud_collector.broker_identities import IdentityKind
from edge_agent.outbox import READINGS, Outbox
from edge_agent.publisher import Publisher
from edge_agent.records import UNNUMBERED
from edge_agent.store import EdgeStore
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import CollectorStatus, Reading
from tests.conftest import ROOT, MosquittoProcess, Services, free_port, now_true, until

ACK_TIMEOUT_S = 120.0  # the edge's; the takeover must not wait for it
READINGS_SENT = 4000


@contextlib.contextmanager
def collector_process(
    services: Services, broker: BrokerSettings, group: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "TRACE_ENV_FILE": str(log.with_suffix(".env")),  # none: only what is set here
        "TRACE_DATABASE_URL": services.database_url,
        "TRACE_MQTT_HOST": broker.host,
        "TRACE_MQTT_PORT": str(broker.port),
        "TRACE_MQTT_USERNAME": broker.username or "",
        "TRACE_MQTT_PASSWORD": broker.password or "",
        "TRACE_SHARE_GROUP": group,
        "TRACE_API_PORT": str(free_port()),
        "TRACE_INGEST_GROUP_MESSAGES": "4",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_collector", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    except BaseException:
        # What the collector said is the first thing to read when this test fails.
        print(f"--- {log.name} (last 60 lines) ---")
        print("\n".join(log.read_text(errors="replace").splitlines()[-60:]))
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _reading(n: int) -> Reading:
    return Reading(
        seq=UNNUMBERED,
        time=datetime(2026, 11, 25, 10, tzinfo=UTC) + timedelta(seconds=n),
        line="line-1",
        batch=None,
        device="plc-1",
        tag=f"t{n % 20}",
        value=float(n),
    )


async def test_a_killed_collector_loses_nothing_and_the_living_one_takes_over_at_once(
    services: Services, private_broker: MosquittoProcess, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    edge_id = f"edge-takeover-{suffix}"
    edge = await private_broker.register(edge_id)
    first = await private_broker.register(f"collector-a-{suffix}", IdentityKind.collector)
    second = await private_broker.register(f"collector-b-{suffix}", IdentityKind.collector)
    group = f"collectors-{suffix}"
    online: set[str] = set()

    async with aiomqtt.Client(
        **edge.client_args(),  # type: ignore[arg-type]
        identifier=f"{edge_id}-watch",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as watcher:
        await watcher.subscribe(topics.all_collector_status(), qos=1)

        async def watch() -> None:
            async for message in watcher.messages:
                status = CollectorStatus.model_validate_json(message.payload)  # type: ignore[arg-type]
                if status.state == "online":
                    online.add(status.collector_id)

        watching = asyncio.create_task(watch())
        with (
            collector_process(services, first, group, tmp_path / "a.log") as a,
            collector_process(services, second, group, tmp_path / "b.log"),
        ):
            names = {first.username, second.username}
            await until(lambda: now_true(names <= online), 60, "both collectors online")
            watching.cancel()

            outbox = Outbox(EdgeStore(tmp_path / "outbox.db"))
            wake = asyncio.Event()
            outbox.on_append = wake.set
            publisher = Publisher(
                edge_id, outbox, edge, wake, max_records=20, linger_s=0.01,
                ack_timeout_s=ACK_TIMEOUT_S,
            )  # fmt: skip
            running = asyncio.create_task(publisher.run())
            try:
                await until(lambda: now_true(publisher.health.connected), 10, "the edge online")
                # Collector A stops taking anything: its share waits, in flight, for it.
                a.send_signal(signal.SIGSTOP)
                outbox.append_many([(READINGS, _reading(n)) for n in range(READINGS_SENT)])
                await until(
                    lambda: now_true(publisher.health.records_acked >= READINGS_SENT // 4),
                    60,
                    "collector B committing its share",
                )
                await asyncio.sleep(1)
                # A holds some, unless the broker already gave up on it (its keepalive ran
                # out while B worked on a slow machine): then the takeover has begun.
                assert outbox.depth(READINGS) > 0 or publisher.health.collectors_offline >= 1
                a.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await until(lambda: now_true(outbox.depth(READINGS) == 0), 30, "the outbox drained")
                took = time.monotonic() - killed
            finally:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
                outbox.store.close()

    assert took < ACK_TIMEOUT_S / 4, f"the takeover took {took:.1f}s"
    assert publisher.health.collectors_offline >= 1
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        row = await (
            await conn.execute(
                "select count(*), count(distinct r.seq), min(r.seq), max(r.seq) from readings r"
                " join edge_streams s using (stream_id) where s.edge_id = %s",
                (edge_id,),
            )
        ).fetchone()
    assert row == (READINGS_SENT, READINGS_SENT, 0, READINGS_SENT - 1)
