"""The MQTT side of the collector: subscribe to edge data, ingest, acknowledge.

Collectors are stateless and share the subscription (MQTT v5 `$share/collectors/...`), so
any number of them can run against one broker and one database. An ack is published only
after the database committed the message (or refused records of it for good, which the ack
says); a message whose ingest met an unavailable database gets no ack, and its edge
resends it.

No message and no failure of its own stops the consumer: ingest settles every message
(commit, refuse, dead-letter), and run_consumer restarts the consumer after anything else
with backoff, keeping IngestCounters true to what it is doing for /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiomqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_collector import dead_letters
from cloud_collector.broker_identities import accepts_edge
from cloud_collector.ingest import ingest, unavailable
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics

log = logging.getLogger(__name__)

# The broker keeps our shared-subscription session for this long while we are down.
SESSION_EXPIRY_S = 24 * 3600
# How often the background loop checks the database and prunes dead letters.
WATCH_INTERVAL_S = 10.0
PRUNE_INTERVAL_S = 3600.0


@dataclass
class IngestCounters:
    """What the consumer did and where it stands; /healthz reports the last five fields
    (the consumer and its database separately from the API's own pool)."""

    messages: int = 0
    rows_inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0  # messages kept in the dead-letter store (refused or unreadable)
    refused_records: int = 0  # records acknowledged as refused
    conflicts: int = 0  # of them, resends that differed from what was committed (alarm)
    unregistered: int = 0  # messages from edges not in the registry (dead letters)
    database_errors: int = 0
    restarts: int = 0  # the consumer failed on its own and was restarted
    dead_letters_pruned: int = 0
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
    """Consume until cancelled. A lost broker or database is reconnected, any other
    failure restarts the consumer; both with backoff, and recorded in `counters`."""
    counters = counters or IngestCounters()
    delay = 0.5
    counters.running = True
    try:
        while True:
            started = time.monotonic()
            try:
                await _consume(settings, counters, ready)
                counters.last_error = "broker ended the subscription"
            except aiomqtt.MqttError as err:
                counters.last_error = f"broker: {err}"
                log.warning("broker connection lost (%s); reconnecting in %.1fs", err, delay)
            except (psycopg.OperationalError, psycopg.InterfaceError) as err:
                counters.database_errors += 1
                counters.last_error = f"database: {err}"
                log.warning("database unavailable (%s); reconnecting in %.1fs", err, delay)
            except Exception as err:
                counters.restarts += 1
                counters.last_error = f"consumer failed: {type(err).__name__}: {err}"
                log.exception("the consumer failed; restarting it in %.1fs", delay)
            finally:
                counters.broker_connected = False
                counters.database_connected = False
            if time.monotonic() - started > 60:
                delay = 0.5  # it ran a good while: this is a new failure, not the same one
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)
    finally:
        counters.running = False


async def _consume(
    settings: CollectorSettings, counters: IngestCounters, ready: asyncio.Event | None
) -> None:
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        counters.database_connected = True
        async with aiomqtt.Client(
            **settings.mqtt.client_args(),  # type: ignore[arg-type]
            identifier=settings.collector_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=_session_properties(),
        ) as client:
            subscription = topics.data_subscription(settings.share_group)
            await client.subscribe(subscription, qos=1)
            counters.broker_connected = True
            log.info("collector %s consuming %s", settings.collector_id, subscription)
            watch = asyncio.create_task(_watch(settings, counters), name="ingest-watch")
            try:
                if ready is not None:
                    ready.set()
                async for message in client.messages:
                    await _handle(conn, client, message, counters, settings)
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch


async def _handle(
    conn: psycopg.AsyncConnection,
    client: aiomqtt.Client,
    message: aiomqtt.Message,
    counters: IngestCounters,
    settings: CollectorSettings,
) -> None:
    payload = message.payload
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes | bytearray):
        payload = b"" if payload is None else str(payload).encode()
    topic = str(message.topic)
    counters.messages += 1
    counters.last_message_at = datetime.now(UTC)
    try:
        if (edge_id := _sender(topic)) is not None and not await accepts_edge(conn, edge_id):
            # The broker let it through (an anonymous or misconfigured broker): the registry
            # has the last word. No stream is made and nothing is acknowledged.
            reason = (
                f"edge {edge_id!r} is not in the registry of broker identities or was revoked: "
                f"register it with `tracectl edge add {edge_id}` if it is one of ours"
            )
            await dead_letters.keep(conn, topic, bytes(payload), reason, edge_id)
            counters.dead_letters += 1
            counters.unregistered += 1
            counters.last_error = dead_letters.storable(f"{topic}: {reason}", 500)
            return
        outcome = await ingest(
            conn,
            topic,
            bytes(payload),
            timedelta(seconds=settings.backfill_after_s),
            max_skew=timedelta(seconds=settings.max_skew_s),
            max_bytes=settings.max_message_bytes,
        )
    except Exception as err:
        if unavailable(err, conn):
            raise
        # ingest settles every message itself; this is a bug of ours, and it is this
        # message's alone: keep it with the reason and go on with the next one.
        log.exception("ingest failed on a message on %s", topic)
        counters.last_error = f"ingest failed: {type(err).__name__}: {err}"
        await _keep_anyway(conn, topic, bytes(payload), err, counters)
        return
    counters.database_connected = True
    if outcome.ack is None or outcome.ack.refused is not None:
        counters.dead_letters += 1
        counters.last_error = dead_letters.storable(f"{topic}: {outcome.reason}", 500)
    if outcome.ack is None:
        return
    counters.rows_inserted += outcome.inserted
    counters.duplicates += outcome.ack.duplicate
    counters.refused_records += outcome.refused
    counters.conflicts += outcome.conflicts
    await client.publish(topics.ack(outcome.ack.edge_id), outcome.ack.model_dump_json(), qos=1)


def _sender(topic: str) -> str | None:
    """The edge a data topic names; None for a topic ingest will dead-letter itself."""
    try:
        return topics.parse_data(topic)[0]
    except ValueError:
        return None


async def _keep_anyway(
    conn: psycopg.AsyncConnection,
    topic: str,
    payload: bytes,
    err: Exception,
    counters: IngestCounters,
) -> None:
    reason = f"the collector failed on this message: {type(err).__name__}: {err}"
    try:
        await dead_letters.keep(conn, topic, payload, reason, None)
        counters.dead_letters += 1
    except Exception as failed:
        if unavailable(failed, conn):
            raise
        log.exception("cannot keep the message on %s in the dead-letter store", topic)


async def _watch(settings: CollectorSettings, counters: IngestCounters) -> None:
    """While the consumer runs: check the database on a connection of its own (so that
    /healthz sees it go away even when no message arrives) and prune old dead letters."""
    retention = timedelta(days=settings.dead_letter_retention_days)
    next_prune = 0.0
    conn: psycopg.AsyncConnection | None = None
    while True:
        try:
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(
                    settings.database_url, autocommit=True, connect_timeout=5
                )
            await conn.execute("select 1")
            counters.database_connected = True
            if time.monotonic() >= next_prune:
                pruned = await dead_letters.prune(conn, retention)
                counters.dead_letters_pruned += pruned
                if pruned:
                    log.info("pruned %d dead letters not seen for %s", pruned, retention)
                next_prune = time.monotonic() + PRUNE_INTERVAL_S
        except asyncio.CancelledError:
            if conn is not None:
                await conn.close()
            raise
        except Exception as err:
            counters.database_connected = False
            counters.last_error = f"database: {err}"
            log.warning("database check failed: %s", err)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
                conn = None
        await asyncio.sleep(WATCH_INTERVAL_S)
