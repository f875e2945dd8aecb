"""The consumer's flow through a real broker: what it holds is bounded by the Receive
Maximum while the database does not move (the broker keeps the rest), everything commits
once it moves again, and the collector says online and offline on its status topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import psycopg

from cloud_collector.consumer import IngestCounters, lane, run_consumer
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from protocols.mqtt.contract import Ack, CollectorStatus
from tests.conftest import MosquittoProcess, Services, now_true, until


def _message(edge: str, seq: int, records: int = 1) -> bytes:
    """A message of `records` readings numbered from `seq`."""
    body = {
        "edge_id": edge,
        "stream": "readings",
        "epoch": "e",
        "records": [
            {
                "kind": "reading",
                "seq": n,
                "time": "2026-11-25T10:00:00Z",
                "line": "l1",
                "batch": None,
                "device": "d",
                "tag": "t",
                "value": float(n),
            }
            for n in range(seq, seq + records)
        ],
    }
    return json.dumps(body).encode()


@contextlib.asynccontextmanager
async def consuming(
    settings: CollectorSettings, counters: IngestCounters
) -> AsyncIterator[asyncio.Task[None]]:
    ready = asyncio.Event()
    task = asyncio.create_task(run_consumer(settings, counters, ready))
    try:
        async with asyncio.timeout(15):
            await ready.wait()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _committed(database_url: str, edge: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "select count(*) from readings join edge_streams using (stream_id)"
                " where edge_id = %s",
                (edge,),
            )
        ).fetchone()
    return int(row[0]) if row else 0


def test_an_edges_messages_all_go_to_one_lane_and_the_edges_spread_over_the_lanes() -> None:
    edges = [f"edge-{n:02d}" for n in range(20)]
    for lanes in (2, 3):
        seen = {
            edge: {lane(topics.data(edge, stream), lanes) for stream in ("readings", "events")}
            for edge in edges
        }
        assert all(len(one) == 1 for one in seen.values()), seen  # per-edge order holds
        assert set().union(*seen.values()) == set(range(lanes))
    assert {lane(topics.data(edge, "readings"), 1) for edge in edges} == {0}
    # A topic that names no edge is dead-lettered on the first lane.
    assert lane("trace/v1/nonsense", 2) == 0


async def _stalled(
    services: Services,
    collector_settings: CollectorSettings,
    private_broker: MosquittoProcess,
    limits: dict[str, int],
    records: int,
    published: int,
    held: int,
) -> IngestCounters:
    """`published` messages of `records` readings each, sent while the database cannot
    write readings: the collector (under `limits`) holds exactly `held` of them and takes
    no more while it waits; once the database moves again, everything commits and is
    acknowledged once."""
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    broker = await private_broker.register(edge)
    settings = collector_settings.model_copy(
        update={
            "mqtt": private_broker.broker,
            "collector_id": private_broker.broker.username,
            **limits,
        }
    )
    counters = IngestCounters()
    firsts = [records * n for n in range(published)]
    async with (
        await psycopg.AsyncConnection.connect(services.database_url) as blocker,
        consuming(settings, counters),
        aiomqtt.Client(
            **broker.client_args(),  # type: ignore[arg-type]
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as edge_client,
    ):
        await edge_client.subscribe(topics.ack(edge), qos=1)
        # Readings cannot be written while this transaction holds its lock.
        await blocker.execute("lock table readings in share mode")
        for first in firsts:
            payload = _message(edge, first, records)
            await edge_client.publish(topics.data(edge, "readings"), payload, qos=1)
        await until(lambda: now_true(counters.in_hand >= held), 15, f"the collector holding {held}")
        await asyncio.sleep(2)  # time enough to take more, were it allowed to
        assert counters.in_hand_peak == held
        assert await _committed(services.database_url, edge) == 0
        await blocker.rollback()

        acks: set[int] = set()
        async with asyncio.timeout(60):
            async for message in edge_client.messages:
                ack = Ack.model_validate_json(message.payload)  # type: ignore[arg-type]
                assert ack.refused is None and not ack.duplicate
                acks.add(ack.first_seq)
                if len(acks) == published:
                    break
    assert acks == set(firsts)
    assert await _committed(services.database_url, edge) == records * published
    assert counters.in_hand_peak == held
    return counters


async def test_a_stalled_database_holds_the_collector_to_its_receive_maximum(
    services: Services, collector_settings: CollectorSettings, private_broker: MosquittoProcess
) -> None:
    limits = {"receive_maximum": 6, "ingest_group_messages": 3}
    counters = await _stalled(
        services, collector_settings, private_broker, limits, records=1, published=120, held=6
    )
    assert counters.groups >= 120 // 3


async def test_a_stalled_database_holds_the_collector_to_its_bytes_in_hand(
    services: Services, collector_settings: CollectorSettings, private_broker: MosquittoProcess
) -> None:
    """Large messages: the bound of bytes stops the intake long before the Receive Maximum
    would (4 messages of ~40 kB held against 3.5 of them in bytes, 100 allowed in count)."""
    size = len(_message("edge-00000000", 0, records=300))
    limits = {"receive_maximum": 100, "held_bytes": int(size * 3.5), "ingest_group_messages": 2}
    await _stalled(
        services, collector_settings, private_broker, limits, records=300, published=12, held=4
    )


async def test_a_collector_says_online_and_offline(
    collector_settings: CollectorSettings, private_broker: MosquittoProcess
) -> None:
    watcher = await private_broker.register(f"edge-{uuid.uuid4().hex[:8]}")
    settings = collector_settings.model_copy(
        update={"mqtt": private_broker.broker, "collector_id": private_broker.broker.username}
    )
    topic = topics.collector_status(settings.status_id)
    async with aiomqtt.Client(
        **watcher.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as edge_client:
        await edge_client.subscribe(topics.all_collector_status(), qos=1)
        states = []
        async with consuming(settings, IngestCounters()):
            async with asyncio.timeout(10):
                async for message in edge_client.messages:
                    states.append(CollectorStatus.model_validate_json(message.payload))  # type: ignore[arg-type]
                    break
        async with asyncio.timeout(10):
            async for message in edge_client.messages:
                assert str(message.topic) == topic and not message.retain
                states.append(CollectorStatus.model_validate_json(message.payload))  # type: ignore[arg-type]
                break
    assert [(s.collector_id, s.state) for s in states] == [
        (settings.status_id, "online"),
        (settings.status_id, "offline"),
    ]
