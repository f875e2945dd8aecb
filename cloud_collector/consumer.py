"""The MQTT side of the collector: subscribe to edge data, ingest, acknowledge.

Collectors are stateless and share the subscription (MQTT v5 `$share/collectors/...`), so
any number of them can run against one broker and one database. An ack is published only
after the database committed the message; a message whose ingest failed on a database
error gets no ack, and its edge resends it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiomqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_collector.ingest import ingest
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics

log = logging.getLogger(__name__)

# The broker keeps our shared-subscription session for this long while we are down.
SESSION_EXPIRY_S = 24 * 3600


@dataclass
class IngestCounters:
    """What the consumer did and where it stands; /healthz reports the last five fields
    (the consumer and its database separately from the API's own pool)."""

    messages: int = 0
    rows_inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    database_errors: int = 0
    running: bool = False  # the consumer task is alive (False once it has stopped)
    broker_connected: bool = False
    database_connected: bool = False
    last_error: str | None = None  # the last failure the consumer met, with its reason
    last_message_at: datetime | None = None


def _session_properties() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    return props


async def run_consumer(
    settings: CollectorSettings,
    counters: IngestCounters | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Consume until cancelled, reconnecting to broker and database with backoff."""
    counters = counters or IngestCounters()
    delay = 0.5
    while True:
        try:
            async with (
                await psycopg.AsyncConnection.connect(
                    settings.database_url, autocommit=True
                ) as conn,
                aiomqtt.Client(
                    **settings.mqtt.client_args(),  # type: ignore[arg-type]
                    identifier=settings.collector_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=_session_properties(),
                ) as client,
            ):
                subscription = topics.data_subscription(settings.share_group)
                await client.subscribe(subscription, qos=1)
                log.info("collector %s consuming %s", settings.collector_id, subscription)
                if ready is not None:
                    ready.set()
                delay = 0.5
                backfill_after = timedelta(seconds=settings.backfill_after_s)
                async for message in client.messages:
                    await _handle(conn, client, message, counters, backfill_after)
        except aiomqtt.MqttError as err:
            log.warning("broker connection lost (%s); reconnecting in %.1fs", err, delay)
        except psycopg.OperationalError as err:
            counters.database_errors += 1
            log.warning("database unavailable (%s); reconnecting in %.1fs", err, delay)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 30.0)


async def _handle(
    conn: psycopg.AsyncConnection,
    client: aiomqtt.Client,
    message: aiomqtt.Message,
    counters: IngestCounters,
    backfill_after: timedelta,
) -> None:
    payload = message.payload
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes | bytearray):
        payload = b"" if payload is None else str(payload).encode()
    counters.messages += 1
    outcome = await ingest(conn, str(message.topic), bytes(payload), backfill_after)
    if outcome.ack is None:
        counters.dead_letters += 1
        return
    counters.rows_inserted += outcome.inserted
    counters.duplicates += outcome.ack.duplicate
    await client.publish(topics.ack(outcome.ack.edge_id), outcome.ack.model_dump_json(), qos=1)
