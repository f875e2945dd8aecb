"""Through the real broker: garbage on a data topic is dead-lettered and the valid message
after it is committed and acknowledged to its edge."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiomqtt
import psycopg

from protocols.mqtt import topics
from protocols.mqtt.contract import Ack
from tests.conftest import RunningCollector, Services


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
