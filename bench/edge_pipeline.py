"""Edge throughput: readings per second through bind -> outbox (SQLite, durable) -> MQTT
publish -> ack -> delete, on one core, against the project's real broker.

The collector is replaced by an ack responder in a separate process (it acknowledges each
message without a database), so the figure is the edge's own cost. Readings per
cpu-second (the edge process's CPU time) is the figure to compare on a busy machine, where
the wall-clock rate mostly measures the wait for the core and for fsync. Also measures the
outbox's bytes per reading, and from it the bytes per hour of outage at a stated rate.

    make bench
    (or: eval "$(deploy/services.sh up)"; .venv/bin/python bench/edge_pipeline.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import psycopg

from cloud_collector import broker_identities
from cloud_collector.broker_identities import BrokerFiles, IdentityKind
from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings
from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.outbox import READINGS, Outbox
from edge_agent.publisher import Publisher
from edge_agent.store import EdgeStore
from protocols.driver import Sample
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import Ack

EDGE = "bench-edge"
COMMIT_INTERVAL_S = 0.05  # the edge agent's default (TRACE_EDGE_OUTBOX_COMMIT_INTERVAL_S)


async def bench_identities() -> tuple[BrokerSettings, BrokerSettings]:
    """Broker identities of the bench's edge and of its ack responder (a collector's rules),
    issued afresh in the collector's registry (TRACE_DATABASE_URL) and put into the broker's
    files (TRACE_BROKER_*, which `deploy/services.sh up` prints)."""
    files = BrokerFiles()
    url = CollectorSettings().database_url
    migrate(url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        edge = await broker_identities.issue(conn, EDGE, IdentityKind.edge, "bench", rotate=True)
        acker = await broker_identities.issue(
            conn, "bench-acker", IdentityKind.collector, "bench", rotate=True
        )
        await broker_identities.update_broker(conn, files)
    await asyncio.sleep(0.5)  # the broker re-reads its files a moment after the signal
    return (
        BrokerSettings(username=edge.name, password=edge.password),
        BrokerSettings(username=acker.name, password=acker.password),
    )


def ack_responder(broker: BrokerSettings, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    async def run() -> None:
        async with aiomqtt.Client(
            **broker.client_args(),  # type: ignore[arg-type]
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            await client.subscribe(f"{topics.ROOT}/{EDGE}/data/+", qos=1)
            ready.set()
            async for message in client.messages:
                env = json.loads(message.payload)  # type: ignore[arg-type]
                records = env["records"]
                ack = Ack(
                    edge_id=EDGE,
                    stream=env["stream"],
                    epoch=env["epoch"],
                    first_seq=records[0]["seq"],
                    last_seq=records[-1]["seq"],
                )
                await client.publish(topics.ack(EDGE), ack.model_dump_json(), qos=1)

    asyncio.run(run())


async def pipeline(
    total: int, tags: int, broker: BrokerSettings, state: Path, commit_interval_s: float
) -> dict[str, float]:
    store = EdgeStore(state / "outbox.db", commit_interval_s=commit_interval_s)
    outbox = Outbox(store, max_bytes=1 << 40)
    wake = asyncio.Event()
    outbox.on_append = wake.set
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox)
    binder.start_batch("line-1", "BENCH-1", "bench")
    publisher = Publisher(
        EDGE, outbox, broker, wake, max_records=1000, linger_s=0.0, max_inflight_messages=20
    )
    running = asyncio.create_task(publisher.run())
    while not publisher.health.connected:
        await asyncio.sleep(0.01)
    samples = [Sample(f"tag{i:03d}", 20.0 + i / 7, "Cel") for i in range(tags)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    produced = 0
    while produced < total:
        binder.readings("line-1", "sim-device", samples, datetime.now(UTC))
        produced += tags
        if produced % 10_000 == 0 and outbox.depth(READINGS) > 50_000:
            await asyncio.sleep(0.005)  # a real device cannot outrun a full window either
        else:
            await asyncio.sleep(0)
    outbox.flush()
    while outbox.depth(READINGS) > 0:
        await asyncio.sleep(0.005)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    outbox.store.close()
    return {
        "readings": produced,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "readings_per_s": produced / elapsed,
        "messages": publisher.health.messages_sent,
    }


def outbox_bytes_per_reading(tags: int, state: Path, n: int = 100_000) -> float:
    """File bytes per reading held in the outbox during an outage (nothing acknowledged)."""
    outbox = Outbox(EdgeStore(state / "outage.db"), max_bytes=1 << 40)
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox)
    binder.start_batch("line-1", "BENCH-2", "bench")
    samples = [Sample(f"tag{i:03d}", 20.0 + i / 7, "Cel") for i in range(tags)]
    for _ in range(n // tags):
        binder.readings("line-1", "sim-device", samples, datetime.now(UTC))
    outbox.store.db.execute("pragma wal_checkpoint(truncate)")
    stats = outbox.stats()
    outbox.store.close()
    size = sum(p.stat().st_size for p in state.glob("outage.db*"))
    return size / stats.streams[READINGS].depth, stats.bytes / stats.streams[READINGS].depth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=300_000)
    parser.add_argument("--tags", type=int, default=100, help="readings per poll")
    parser.add_argument("--rate", type=float, default=100.0, help="readings/s for outage sizing")
    args = parser.parse_args()
    broker, acker_broker = asyncio.run(bench_identities())
    os.sched_setaffinity(0, {0})  # the edge on one core; the ack responder gets the other
    ready = multiprocessing.Event()
    acker = multiprocessing.Process(target=ack_responder, args=(acker_broker, ready))
    acker.start()
    os.sched_setaffinity(acker.pid, {1 % os.cpu_count()})  # type: ignore[operator]
    ready.wait(10)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for interval in (COMMIT_INTERVAL_S, 0.0):
            results[interval] = asyncio.run(
                pipeline(args.readings, args.tags, broker, Path(tmp) / str(interval), interval)
            )
        file_bytes, json_bytes = outbox_bytes_per_reading(args.tags, Path(tmp))
    acker.terminate()
    per_hour = file_bytes * args.rate * 3600
    for interval, result in results.items():
        commit = f"group commit every {interval * 1000:.0f} ms" if interval else "a commit per poll"
        print(
            f"edge pipeline ({commit}): {result['readings']:,} readings of {args.tags}-tag polls "
            f"in {result['seconds']:.2f} s = {result['readings_per_s']:,.0f} readings/s on one "
            f"core (cpu {result['cpu_seconds']:.2f} s = "
            f"{result['readings'] / result['cpu_seconds']:,.0f} readings per cpu-second, "
            f"{result['messages']:,} MQTT messages)"
        )
    print(
        f"outbox: {file_bytes:.0f} bytes per reading on disk ({json_bytes:.0f} of JSON); "
        f"at {args.rate:.0f} readings/s an hour of outage takes {per_hour / 1e6:.1f} MB, "
        f"72 h take {per_hour * 72 / 1e9:.2f} GB"
    )


if __name__ == "__main__":
    main()
