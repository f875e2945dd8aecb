"""Through the real broker: garbage on a data topic is dead-lettered, a refused record is
acknowledged as refused, and the valid message after either is committed and acknowledged
to its edge; the consumer outlives every failure and says where it stands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import aiomqtt
import psycopg
import pytest

from cloud_collector import consumer
from cloud_collector.consumer import IngestCounters, run_consumer
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from protocols.mqtt.contract import Ack
from tests.conftest import (
    MosquittoProcess,
    RunningCollector,
    Services,
    free_port,
    now_true,
    until,
)


async def test_garbage_then_valid_message(services: Services, collector: RunningCollector) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    record = {
        "kind": "reading",
        "seq": 0,
        "time": "2026-11-25T10:00:00Z",
        "line": "l1",
        "batch": None,
        "device": "d",
        "tag": "t",
        "value": 3.5,
    }
    valid = json.dumps({"edge_id": edge, "stream": "readings", "epoch": "e", "records": [record]})
    # The edge's own identity: it may publish only under its prefix and read only its acks.
    broker = await services.register(edge)
    async with aiomqtt.Client(
        **broker.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(topics.ack(edge), qos=1)
        await client.publish(topics.data(edge, "readings"), b"\x00\xffgarbage", qos=1)
        await client.publish(topics.data(edge, "readings"), valid, qos=1)
        async with asyncio.timeout(15):
            async for message in client.messages:
                ack = Ack.model_validate_json(message.payload)  # type: ignore[arg-type]
                break
    assert (ack.edge_id, ack.stream, ack.epoch, ack.first_seq, ack.last_seq) == (
        edge,
        "readings",
        "e",
        0,
        0,
    )
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        reasons = await (
            await conn.execute(
                "select reason from dead_letters where topic = %s", (topics.data(edge, "readings"),)
            )
        ).fetchall()
    assert len(reasons) == 1 and "invalid readings message" in reasons[0][0]


async def _acks(client: aiomqtt.Client, count: int) -> list[Ack]:
    acks: list[Ack] = []
    async with asyncio.timeout(15):
        async for message in client.messages:
            acks.append(Ack.model_validate_json(message.payload))  # type: ignore[arg-type]
            if len(acks) == count:
                return acks
    return acks


def _batch_started(edge: str, seq: int, by: str) -> bytes:
    record = {
        "kind": "batch_started",
        "seq": seq,
        "time": "2026-11-25T10:00:00Z",
        "line": "l1",
        "batch": f"B-{edge}",
        "by": by,
    }
    body = {"edge_id": edge, "stream": "events", "epoch": "e", "records": [record]}
    return json.dumps(body, separators=(",", ":")).encode()


async def test_a_nul_in_a_text_field_is_refused_and_ingest_and_api_go_on(
    services: Services, collector: RunningCollector
) -> None:
    """The 180-byte message of issue 10 (a NUL in `by`, from any client that reaches the
    broker) once stopped the consumer and the API with it."""
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    nul = _batch_started(edge, 0, "a\u0000")
    assert len(nul) < 200
    broker = await services.register(edge)
    async with aiomqtt.Client(
        **broker.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(topics.ack(edge), qos=1)
        await client.publish(topics.data(edge, "events"), nul, qos=1)
        await client.publish(topics.data(edge, "events"), _batch_started(edge, 1, "op"), qos=1)
        refused, committed = await _acks(client, 2)
    assert (refused.first_seq, refused.last_seq) == (0, 0)
    assert refused.refused is not None and "NUL character" in refused.refused
    assert (committed.first_seq, committed.refused, committed.duplicate) == (1, None, False)
    state = collector.counters
    assert state.running and state.broker_connected and state.database_connected
    assert state.last_message_at is not None and state.refused_records >= 1
    async with collector.client() as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_a_failure_of_ingest_itself_dead_letters_the_message_and_the_consumer_goes_on(
    services: Services, collector: RunningCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    cursed = topics.data(edge, "cursed")
    real = consumer.ingest

    async def failing_for_one_topic(conn: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic == cursed:
            raise KeyError("injected for this message")
        return await real(conn, topic, *args, **kwargs)

    monkeypatch.setattr(consumer, "ingest", failing_for_one_topic)
    restarts = collector.counters.restarts
    broker = await services.register(edge)
    async with aiomqtt.Client(
        **broker.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(topics.ack(edge), qos=1)
        await client.publish(cursed, b"{}", qos=1)
        await client.publish(topics.data(edge, "events"), _batch_started(edge, 0, "op"), qos=1)
        [ack] = await _acks(client, 1)
    assert (ack.stream, ack.first_seq, ack.refused) == ("events", 0, None)
    assert collector.counters.restarts == restarts  # settled in place, not by a restart
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        reasons = await (
            await conn.execute("select reason from dead_letters where topic = %s", (cursed,))
        ).fetchall()
    assert reasons == [
        ("the collector failed on this message: KeyError: 'injected for this message'",)
    ]


async def test_a_resend_that_differs_raises_the_conflict_alarm(
    services: Services, collector: RunningCollector
) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    conflicts = collector.counters.conflicts
    broker = await services.register(edge)
    async with aiomqtt.Client(
        **broker.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(topics.ack(edge), qos=1)
        await client.publish(topics.data(edge, "events"), _batch_started(edge, 0, "op-1"), qos=1)
        [first] = await _acks(client, 1)
        await client.publish(topics.data(edge, "events"), _batch_started(edge, 0, "op-2"), qos=1)
        [second] = await _acks(client, 1)
    assert first.refused is None
    assert second.refused is not None and "differs from the record committed" in second.refused
    assert collector.counters.conflicts == conflicts + 1


async def test_an_unreachable_database_is_reported_and_retried(
    collector_settings: CollectorSettings,
) -> None:
    settings = collector_settings.model_copy(
        update={
            "database_url": f"postgresql://trace@127.0.0.1:{free_port()}/nowhere",
            "collector_id": f"collector-nodb-{uuid.uuid4().hex[:6]}",
            "share_group": f"collector-nodb-{uuid.uuid4().hex[:6]}",
        }
    )
    counters = IngestCounters()
    task = asyncio.create_task(run_consumer(settings, counters))
    try:
        await until(lambda: now_true(counters.database_errors >= 2), 10, "two failed connections")
        assert counters.running and not counters.database_connected
        assert not counters.broker_connected
        assert (counters.last_error or "").startswith("database: ")
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not counters.running


async def test_a_consumer_that_fails_is_restarted_and_the_failure_recorded(
    collector_settings: CollectorSettings,
    private_broker: MosquittoProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A broker of its own: a session left in the shared group would take its share of the
    # other tests' messages once this consumer is gone.
    settings = collector_settings.model_copy(update={"mqtt": private_broker.broker})
    real = consumer._consume
    failures = iter([RuntimeError("injected consumer failure")])

    async def failing_once(*args: Any) -> None:
        if (failure := next(failures, None)) is not None:
            raise failure
        await real(*args)

    monkeypatch.setattr(consumer, "_consume", failing_once)
    counters = IngestCounters()
    ready = asyncio.Event()
    task = asyncio.create_task(run_consumer(settings, counters, ready))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        assert counters.restarts == 1
        assert counters.last_error == "consumer failed: RuntimeError: injected consumer failure"
        assert counters.running and counters.broker_connected and counters.database_connected
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_edge_revoked_from_the_registry_is_dead_lettered_with_no_stream(
    services: Services, collector: RunningCollector
) -> None:
    """The broker normally shuts a revoked edge out; should one get through anyway (a
    broker left anonymous, a stale password file), the collector's registry has the last
    word: no ack, no stream, a dead letter naming the fix."""
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    broker = await services.register(edge)
    async with aiomqtt.Client(
        **broker.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(topics.ack(edge), qos=1)
        await client.publish(topics.data(edge, "events"), _batch_started(edge, 0, "op"), qos=1)
        acks = await _acks(client, 1)
        assert [a.refused for a in acks] == [None]
        # Revoked in the registry only: the broker's files still let it publish.
        async with await psycopg.AsyncConnection.connect(
            services.database_url, autocommit=True
        ) as conn:
            await conn.execute(
                "update broker_identities set revoked_at = now() where name = %s", (edge,)
            )
        before = collector.counters.unregistered
        await client.publish(topics.data(edge, "events"), _batch_started(edge, 1, "op"), qos=1)
        await until(lambda: now_true(collector.counters.unregistered > before), 15, "a dead letter")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                async for message in client.messages:
                    raise AssertionError(f"a revoked edge got an ack: {message.payload!r}")
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        reasons = await (
            await conn.execute(
                "select reason from dead_letters where topic = %s", (topics.data(edge, "events"),)
            )
        ).fetchall()
        committed = await (
            await conn.execute(
                "select max(c.last_seq) from stream_commits c join edge_streams s using"
                " (stream_id) where s.edge_id = %s",
                (edge,),
            )
        ).fetchone()
    assert len(reasons) == 1 and f"tracectl edge add {edge}" in reasons[0][0]
    assert committed == (0,)  # the first message only
