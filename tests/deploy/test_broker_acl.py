"""The local broker (deploy/mosquitto/local.conf, as deploy/services.sh runs it) holds
every client to its identity: what an attacker on the plant network, or an edge that
misbehaves, tries first. Each test fails against an anonymous broker without ACLs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import aiomqtt
import psycopg
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_collector import broker_identities
from cloud_collector.broker_identities import IdentityKind
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import Ack
from tests.conftest import (
    MosquittoProcess,
    RunningCollector,
    Services,
    broker_accepts,
    now_true,
    until,
)


def _client(settings: BrokerSettings, **kwargs: object) -> aiomqtt.Client:
    return aiomqtt.Client(
        **settings.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
        **kwargs,  # type: ignore[arg-type]
    )


def _envelope(edge: str, seq: int) -> str:
    record = {
        "kind": "reading",
        "seq": seq,
        "time": "2026-11-25T10:00:00Z",
        "line": "l1",
        "batch": None,
        "device": "d",
        "tag": "t",
        "value": 1.5,
    }
    return json.dumps({"edge_id": edge, "stream": "readings", "epoch": "e", "records": [record]})


async def _streams_of(services: Services, edge: str) -> int:
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        cur = await conn.execute("select count(*) from edge_streams where edge_id = %s", (edge,))
        row = await cur.fetchone()
    return row[0] if row else 0


async def _dead_letters_of(services: Services, edge: str) -> int:
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        cur = await conn.execute(
            "select count(*) from dead_letters where topic like %s", (f"%/{edge}/%",)
        )
        row = await cur.fetchone()
    return row[0] if row else 0


async def test_anonymous_and_wrong_password_clients_are_refused(services: Services) -> None:
    anonymous = BrokerSettings(host=services.mqtt_host, port=services.mqtt_port)
    assert not await broker_accepts(anonymous)
    edge = await services.register(f"edge-{uuid.uuid4().hex[:8]}")
    assert not await broker_accepts(edge.model_copy(update={"password": "guessed"}))
    assert not await broker_accepts(edge.model_copy(update={"username": "collector-local"}))


async def test_an_edge_cannot_publish_under_another_edges_prefix(
    services: Services, collector: RunningCollector
) -> None:
    mallory, victim = f"edge-{uuid.uuid4().hex[:8]}", f"edge-{uuid.uuid4().hex[:8]}"
    mallory_broker = await services.register(mallory)
    await services.register(victim)
    # A valid message in the victim's name, on the victim's topic: only the broker can tell
    # it is forged (the payload's edge id matches the topic). Mosquitto 2.0.11 with
    # max_queued_messages 0 also ends the connection of a client whose QoS 1 publish it
    # denied, so each attempt gets a connection of its own.
    for topic, payload, retain in (
        (topics.data(victim, "readings"), _envelope(victim, 0), False),
        (topics.data(victim, "events"), b"{}", False),
        (topics.status(victim), b'{"state": "offline"}', True),
    ):
        with contextlib.suppress(aiomqtt.MqttError):
            async with _client(mallory_broker) as client:
                await client.publish(topic, payload, qos=1, retain=retain)
    # Then one of its own: once it is acknowledged, the collector has had every chance to
    # see the forged ones.
    async with _client(mallory_broker) as client:
        await client.subscribe(topics.ack(mallory), qos=1)
        await client.publish(topics.data(mallory, "readings"), _envelope(mallory, 0), qos=1)
        async with asyncio.timeout(15):
            async for message in client.messages:
                ack = Ack.model_validate_json(message.payload)  # type: ignore[arg-type]
                break
    assert ack.edge_id == mallory
    # Nor did the forged retained status stick for those who watch the edges.
    watcher = await services.register(f"watch-{uuid.uuid4().hex[:8]}", IdentityKind.collector)
    async with _client(watcher) as client:
        await client.subscribe(topics.status(victim), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                async for message in client.messages:
                    raise AssertionError(f"forged retained status kept: {message.payload!r}")
    assert await _streams_of(services, victim) == 0, "the forged message reached the database"
    assert await _dead_letters_of(services, victim) == 0, "the forged message reached ingest"


async def test_an_edge_reads_neither_other_edges_acks_nor_their_data(
    services: Services, collector: RunningCollector
) -> None:
    """Nor through the collectors' shared subscription: the broker checks every delivery
    against the reader's rules. (Mosquitto 2.0's ACL file does not check SUBSCRIBE itself:
    an edge naming the collectors' group does join it, and the broker then drops the share
    it picks for that edge; the edge's resend after its ack timeout gets it through. See
    the README: production sets a share group name that edges cannot guess.)"""
    mallory, victim = f"edge-{uuid.uuid4().hex[:8]}", f"edge-{uuid.uuid4().hex[:8]}"
    mallory_broker = await services.register(mallory)
    victim_broker = await services.register(victim)
    seen: list[str] = []

    async def eavesdrop(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            seen.append(str(message.topic))

    async with _client(mallory_broker) as spy:
        for topic in (
            topics.ack(victim),
            topics.ack("+"),
            topics.all_data(),
            "trace/v1/#",
            "#",
            topics.data_subscription(collector.settings.share_group),
        ):
            await spy.subscribe(topic, qos=1)
        listening = asyncio.create_task(eavesdrop(spy))
        try:
            async with _client(victim_broker) as client:
                await client.subscribe(topics.ack(victim), qos=1)
                acks: list[Ack] = []
                for seq in range(4):
                    await client.publish(topics.data(victim, "readings"), _envelope(victim, seq))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        async for message in client.messages:
                            acks.append(Ack.model_validate_json(message.payload))  # type: ignore[arg-type]
                            if sum(a.last_seq - a.first_seq + 1 for a in acks) >= 2:
                                break
            assert acks, "the victim's own acks never came (the test proves nothing then)"
            await asyncio.sleep(0.5)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
    # The collectors' status is every edge's to read (an edge resends when one goes away),
    # and so are the lots on hold (one retained set for every edge, maybe from another test).
    assert [t for t in seen if not topics.is_collector_status(t) and t != topics.holds()] == []


async def test_an_identity_cannot_take_over_another_identitys_client_id(
    services: Services,
) -> None:
    coll_name, edge = f"coll-{uuid.uuid4().hex[:8]}", f"edge-{uuid.uuid4().hex[:8]}"
    coll = await services.register(coll_name, IdentityKind.collector)
    intruder = await services.register(edge)
    async with _client(coll, identifier=coll_name) as victim:
        await victim.subscribe(topics.data(edge, "+"), qos=1)
        # The intruder asks for the collector's client id: on a broker without
        # use_username_as_clientid this would disconnect the collector.
        async with _client(intruder, identifier=coll_name) as client:
            await client.publish(topics.data(edge, "readings"), b"still here?", qos=1)
            async with asyncio.timeout(5):
                async for message in victim.messages:
                    assert message.payload == b"still here?"
                    break


async def test_revoking_an_identity_disconnects_it_and_keeps_it_out(services: Services) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    settings = await services.register(edge)
    async with _client(settings) as client:
        async with await psycopg.AsyncConnection.connect(
            services.database_url, autocommit=True
        ) as conn:
            assert await broker_identities.revoke(conn, edge, IdentityKind.edge)
            await broker_identities.update_broker(conn, services.broker_files)
        dropped = False

        async def publish_fails() -> bool:
            nonlocal dropped
            try:
                await client.publish(topics.data(edge, "readings"), b"x", qos=1, timeout=1)
            except aiomqtt.MqttError:
                dropped = True
            return dropped

        await until(publish_fails, 10, "the broker dropping the revoked edge's connection")
    await until(lambda: now_true(True), 1, "")
    assert not await broker_accepts(settings)


async def test_a_collectors_session_follows_its_identity_across_restarts_and_rotation(
    private_broker: MosquittoProcess,
) -> None:
    """With use_username_as_clientid the persistent session (and the share of messages the
    broker queues in it while the collector is down) belongs to the identity: a restarted
    collector resumes it whatever client id it asks for, also after its password was
    rotated; no other identity can claim it."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    edge = await private_broker.register("line-9")
    first = await private_broker.register("collector-a", IdentityKind.collector)
    other = await private_broker.register("collector-b", IdentityKind.collector)

    def persistent(settings: BrokerSettings, identifier: str) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        return _client(settings, identifier=identifier, clean_start=False, properties=props)

    async with persistent(first, "collector-a-pid-1") as client:
        await client.subscribe(topics.data_subscription(group), qos=1)
    async with _client(edge) as client:
        for n in range(3):
            await client.publish(topics.data("line-9", "readings"), f"m{n}", qos=1)
    # collector-b asks for collector-a's client id: it gets a session of its own, empty.
    async with persistent(other, "collector-a") as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                async for message in client.messages:
                    raise AssertionError(f"another identity got a's queue: {message.payload!r}")
    # Rotated without `register`'s probe, which connects with a clean start and would end
    # the very session under test; a refused connection leaves the session alone.
    rotated = private_broker.register_now("collector-a", IdentityKind.collector)
    private_broker.reload()
    assert rotated.password != first.password
    got: list[object] = []
    for _ in range(50):
        with contextlib.suppress(MqttConnectError):
            async with persistent(rotated, "collector-a-pid-2") as client:
                async with asyncio.timeout(5):
                    async for message in client.messages:
                        got.append(message.payload)
                        if len(got) == 3:
                            break
                break
        await asyncio.sleep(0.1)
    assert got == [b"m0", b"m1", b"m2"]
