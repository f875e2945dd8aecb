"""The MQTT side of the collector: subscribe to edge data, ingest, acknowledge.

Collectors are stateless and share the subscription (MQTT v5 `$share/collectors/...`), so
any number of them can run against one broker and one database. An ack is published only
after the database committed the message (or refused records of it for good, which the ack
says); a message whose ingest met an unavailable database gets no ack, and its edge
resends it.

**Flow.** The intake takes what the broker delivers and hands each message to its edge's
lane: one database connection (`ingest_connections` of them) with two tasks. Its grouper
reads what arrives into the forming group while the group before it commits; the
committer takes the forming group when it is free (everything that arrived during its
last commit, up to `ingest_group_messages` / `ingest_group_records`; an idle committer
waits `ingest_group_linger_s` after the first message for more) and commits the group's
fresh readings in one transaction (group_commit.py) and everything else one by one in
arrival order (ingest.py: events, refusals, resends, dead letters), then acknowledges each
message. A lane commits in turns with the lanes of the same number in other collectors of
the database (they take the same edges' messages, and their commits would wait for each
other's stream and rollup rows anyway): `ingest_connections` commits at once into a
database however many collectors share it, and a lane waiting its turn goes on reading
what arrives into its group. The MQTT acknowledgement (PUBACK) of a message goes only
after it is settled, and the collector asks the broker for a Receive Maximum: the broker
never has more messages delivered and unsettled at a collector than that, so what the
collector holds stays bounded when the database is slower than the inflow, and the rest
waits at the broker and in the edges' outboxes.

**Sessions.** A collector holds nothing the edges cannot send again (an edge's outbox is
the durable copy), so it connects with a clean session that ends with its connection: the
broker keeps no dead collector in the shared group and queues nothing for it. It announces
itself online on trace/v1/collectors/<id>/status (retained), with "offline" as its will;
edges that see it go offline send again at once what they have in flight, and the living
collectors take it (a resend of committed records is a duplicate, acknowledged again).

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
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiomqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_collector import dead_letters, rollups
from cloud_collector.broker_identities import accepts_edge
from cloud_collector.group_commit import GroupCommit, Prepared
from cloud_collector.ingest import Outcome, ingest, unavailable
from cloud_collector.intake import Intake
from cloud_collector.messages import Rejected, read, read_readings
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from protocols.mqtt.contract import Ack, CollectorStatus

log = logging.getLogger(__name__)

# A retained "offline" outlives the collector this long, then the broker drops it (ids
# change with every process that has no broker identity of its own).
OFFLINE_KEPT_S = 24 * 3600
# How often the background loop checks the database and prunes dead letters.
WATCH_INTERVAL_S = 10.0
PRUNE_INTERVAL_S = 3600.0

# A lane's turn to commit, database-wide: one lane of each number (`lane()`) commits at
# once, whichever collector it belongs to. Two-key advisory locks under a key of their own
# (the project's one-key locks never collide with them); session-level, so that the lane
# takes its group only once it has the turn, and a collector that dies loses it with its
# connection.
_TURNS = 0x74726331  # "trc1"
_TAKE_TURN = "select pg_advisory_lock(%s, %s)"
_END_TURN = "select pg_advisory_unlock(%s, %s)"

# Edges in the registry of broker identities (broker_identities.accepts_edge, for many).
_ACCEPTED_EDGES = """
select e.edge from unnest(%s::text[]) e(edge)
where not exists (select 1 from broker_identities where kind = 'edge')
    or exists (select 1 from broker_identities b
               where b.kind = 'edge' and b.name = e.edge and b.revoked_at is null)
"""


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
    groups: int = 0  # group commits
    grouped: int = 0  # messages committed by them (the others went one by one)
    in_hand: int = 0  # messages taken from the broker and not yet settled
    in_hand_peak: int = 0  # the most at once (bounded by settings.messages_in_hand)
    running: bool = False  # the consumer task is alive (False once it has stopped)
    broker_connected: bool = False
    database_connected: bool = False
    last_error: str | None = None  # the last failure the consumer met, with its reason
    last_message_at: datetime | None = None


def _held(counters: IngestCounters, held: int) -> None:
    counters.in_hand = held
    counters.in_hand_peak = max(counters.in_hand_peak, held)


def _connect_properties(settings: CollectorSettings) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0  # the session ends with the connection
    props.ReceiveMaximum = settings.messages_in_hand
    return props


def _status(settings: CollectorSettings, state: str) -> str:
    status = CollectorStatus(
        collector_id=settings.status_id,
        state=state,  # type: ignore[arg-type]
        time=datetime.now(UTC),
    )
    return status.model_dump_json()


def _expiring(packet: int) -> Properties:
    props = Properties(packet)
    props.MessageExpiryInterval = OFFLINE_KEPT_S
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
                counters.in_hand = 0  # the broker drops what a closed session held
            if time.monotonic() - started > 60:
                delay = 0.5  # it ran a good while: this is a new failure, not the same one
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)
    finally:
        counters.running = False


async def _consume(
    settings: CollectorSettings, counters: IngestCounters, ready: asyncio.Event | None
) -> None:
    async with contextlib.AsyncExitStack() as connections:
        lanes = [
            await connections.enter_async_context(
                await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
            )
            for _ in range(settings.ingest_connections)
        ]
        counters.database_connected = True
        status = topics.collector_status(settings.status_id)
        client = aiomqtt.Client(
            **settings.mqtt.client_args(),  # type: ignore[arg-type]
            identifier=settings.collector_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=True,
            properties=_connect_properties(settings),
            will=aiomqtt.Will(
                status,
                _status(settings, "offline"),
                qos=1,
                retain=True,
                properties=_expiring(PacketTypes.WILLMESSAGE),
            ),
        )
        intake = Intake(
            client,
            settings.messages_in_hand,
            lambda held: _held(counters, held),
            settings.held_bytes,
        )
        async with client:
            subscription = topics.data_subscription(settings.share_group)
            await client.subscribe(subscription, qos=1)
            await client.publish(status, _status(settings, "online"), qos=1, retain=True)
            counters.broker_connected = True
            log.info(
                "collector %s consuming %s (at most %d messages in hand)",
                settings.collector_id,
                subscription,
                settings.messages_in_hand,
            )
            arrived: list[asyncio.Queue[aiomqtt.Message]] = [asyncio.Queue() for _ in lanes]
            tasks = [
                asyncio.create_task(_watch(settings, counters), name="ingest-watch"),
                asyncio.create_task(_dispatch(client.messages, arrived), name="ingest-intake"),
            ]
            for n, conn in enumerate(lanes):
                flow = Flow(conn, settings, counters, intake.send_ack, intake.release, turn=n)
                tasks.append(
                    asyncio.create_task(flow.group(arrived[n]), name=f"ingest-grouper-{n}")
                )
                tasks.append(asyncio.create_task(flow.commit(), name=f"ingest-committer-{n}"))
            try:
                if ready is not None:
                    ready.set()
                done, _ = await asyncio.wait(tasks[1:], return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # the first failure, as it was raised
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                intake.close()
                # Leaving on purpose (or for the database): a clean disconnect sends no
                # will, so say it here, and the edges resend what this collector held.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await client.publish(
                            status,
                            _status(settings, "offline"),
                            qos=1,
                            retain=True,
                            properties=_expiring(PacketTypes.PUBLISH),
                        )


AckSender = Callable[[Ack], Awaitable[None]]


def lane(topic: str, lanes: int) -> int:
    """The lane (database connection) of a message: the same for every message of an edge,
    so that one connection settles an edge's messages in the order they arrived, and the
    lanes never wait for each other's locks on a stream or a batch's rollups."""
    edge = _sender(topic) if lanes > 1 else None
    return zlib.crc32(edge.encode()) % lanes if edge else 0


async def _dispatch(
    messages: AsyncIterator[aiomqtt.Message], arrived: list[asyncio.Queue[aiomqtt.Message]]
) -> None:
    """Everything the broker delivers, to its edge's lane (at most `messages_in_hand`
    unsettled at once: intake.Intake counts them and stops reading beyond)."""
    async for message in messages:
        arrived[lane(str(message.topic), len(arrived))].put_nowait(message)


@dataclass
class Taken:
    """A message taken from the broker, read for its way through ingest."""

    message: aiomqtt.Message
    prepared: Prepared | None = None  # fresh-looking readings: the group commit's
    unreadable: bool = False  # not even a range: a dead letter, settled in any order

    @property
    def records(self) -> int:
        return len(self.prepared.message.records) if self.prepared is not None else 1


@dataclass
class _Forming:
    """The group a lane's grouper reads messages into, and their rollups."""

    taken: list[Taken] = field(default_factory=list)
    parts: rollups.Parts = field(default_factory=rollups.Parts)
    records: int = 0
    first_at: float = 0.0  # loop time its first message was read

    def full(self, settings: CollectorSettings) -> bool:
        return (
            len(self.taken) >= settings.ingest_group_messages
            or self.records >= settings.ingest_group_records
        )


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class Flow:
    """The consumer's tasks over one database connection: `send_ack` publishes an ack,
    `release` gives the broker its PUBACK of a settled message; `turn`, when given, is the
    lane's number, whose turn it takes in the database before each group it commits."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection,
        settings: CollectorSettings,
        counters: IngestCounters,
        send_ack: AckSender,
        release: Callable[[aiomqtt.Message], None],
        turn: int | None = None,
    ) -> None:
        self.conn = conn
        self.turn = turn
        self.settings = settings
        self.counters = counters
        self.send_ack = send_ack
        self.release = release
        self.committer = GroupCommit(timedelta(seconds=settings.backfill_after_s))
        self._forming = _Forming()
        self._grown = asyncio.Event()  # a message joined the forming group
        self._taken = asyncio.Event()  # the committer took the forming group

    async def group(self, arrived: asyncio.Queue[aiomqtt.Message]) -> None:
        """Read what arrives into the forming group while the group before it commits,
        until the committer takes it (`next_group`). A group closed earlier, as soon as a
        group was handed on, holds what arrived in the few milliseconds after: measured at
        500 records a message, groups of 2 to 58 messages (28 on average) and most of the
        database's time beyond the COPY in their rollup upserts, a few hundred rows each
        whatever the group's size. Full, it waits for the committer: messages then queue
        in `arrived` up to the intake's bound, and beyond it at the broker."""
        loop = asyncio.get_running_loop()
        while True:
            message = await arrived.get()
            while self._forming.full(self.settings):
                self._taken.clear()
                await self._taken.wait()
            forming = self._forming
            if not forming.taken:
                forming.first_at = loop.time()
            taken = self.read(message, forming.parts)
            forming.taken.append(taken)
            forming.records += taken.records
            self._grown.set()
            if not arrived.empty():
                # Reading is the CPU work of the flow (a get from a queue that holds
                # something does not yield): between two messages, let the committer send
                # its next statement, so the database never waits for it.
                await asyncio.sleep(0)

    async def next_group(self) -> list[Taken]:
        """The forming group, once it has messages and the first has waited
        `ingest_group_linger_s` for more (at once when it is full); a new one forms."""
        await self._until_ready()
        return self._take()

    async def _until_ready(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        while True:
            forming = self._forming
            if forming.taken:
                remaining = forming.first_at + settings.ingest_group_linger_s - loop.time()
                if remaining <= 0 or forming.full(settings):
                    break
            self._grown.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that
            # comes with the event, and the collector would not stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining if forming.taken else None):
                    await self._grown.wait()

    def _take(self) -> list[Taken]:
        forming = self._forming
        self._forming = _Forming()
        self._taken.set()
        return forming.taken

    def read(self, message: aiomqtt.Message, parts: rollups.Parts | None = None) -> Taken:
        """The message read for its way: the group commit's (its readings added to the
        group's rollups `parts`), one by one, or a dead letter."""
        taken = Taken(message)
        topic, payload = str(message.topic), _payload(message)
        try:
            readings = read_readings(
                topic,
                payload,
                datetime.now(UTC),
                timedelta(seconds=self.settings.max_skew_s),
                self.settings.max_message_bytes,
            )
            if readings is not None:
                taken.prepared = self.committer.prepare(readings, parts)
                return taken
            read(topic, payload, self.settings.max_message_bytes)
        except Rejected:
            taken.unreadable = True
        except Exception:
            # ingest reads it again and settles it, whatever it is; nothing here may stop
            # the flow.
            log.exception("reading a message on %s failed; it goes one by one", topic)
        return taken

    async def commit(self) -> None:
        while True:
            if self.turn is None:
                await self.settle(await self.next_group())
                continue
            # The group is taken once the turn has come, not before: while the lane waits
            # for it, what arrives still joins the group.
            await self._until_ready()
            turn = (_TURNS, self.turn)
            await self.conn.execute(_TAKE_TURN, turn)
            await self.settle(self._take())
            # Not in a `finally`: whatever raises out of settle ends the consumer and closes
            # this connection, which ends the turn with it.
            await self.conn.execute(_END_TURN, turn)

    async def settle(self, group: list[Taken]) -> None:
        """Settle a group: the dead letters of unreadable messages first (they touch
        nothing else, and a garbage storm then splits no group), then its fresh readings
        together and everything else one by one, in the order it arrived."""
        for taken in group:
            if taken.unreadable:
                await self._one_by_one(taken)
        fresh = {t.prepared.message.edge_id for t in group if t.prepared is not None}
        if fresh:
            cur = await self.conn.execute(_ACCEPTED_EDGES, (sorted(fresh),))
            accepted = {row[0] for row in await cur.fetchall()}
            for taken in group:
                if taken.prepared is not None and taken.prepared.message.edge_id not in accepted:
                    taken.prepared = None  # ingest's way: dead-lettered with the reason
        run: list[Taken] = []
        for taken in group:
            if taken.unreadable:
                continue
            if taken.prepared is not None:
                run.append(taken)
                continue
            await self._commit_run(run)
            run = []
            await self._one_by_one(taken)
        await self._commit_run(run)

    async def _commit_run(self, run: list[Taken]) -> None:
        if not run:
            return
        prepared = [t.prepared for t in run if t.prepared is not None]
        result = await self.committer.commit(self.conn, prepared)
        counters = self.counters
        if result.committed:
            counters.groups += 1
            counters.grouped += len(result.committed)
            counters.database_connected = True
        for _, outcome in sorted(result.committed.items()):
            counters.messages += 1
            counters.last_message_at = datetime.now(UTC)
            await self._acknowledge(outcome)
        for position in sorted(result.committed):
            self._settled(run[position].message)
        for position in result.left:
            await self._one_by_one(run[position])

    async def _acknowledge(self, outcome: Outcome) -> None:
        assert outcome.ack is not None
        self.counters.rows_inserted += outcome.inserted
        self.counters.duplicates += outcome.ack.duplicate
        await self.send_ack(outcome.ack)

    async def _one_by_one(self, taken: Taken) -> None:
        await handle(self.conn, self.send_ack, taken.message, self.counters, self.settings)
        self._settled(taken.message)

    def _settled(self, message: aiomqtt.Message) -> None:
        self.release(message)


async def handle(
    conn: psycopg.AsyncConnection,
    send_ack: AckSender,
    message: aiomqtt.Message,
    counters: IngestCounters,
    settings: CollectorSettings,
) -> None:
    payload = _payload(message)
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
            await dead_letters.keep(conn, topic, payload, reason, edge_id)
            counters.dead_letters += 1
            counters.unregistered += 1
            counters.last_error = dead_letters.storable(f"{topic}: {reason}", 500)
            return
        outcome = await ingest(
            conn,
            topic,
            payload,
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
        await _keep_anyway(conn, topic, payload, err, counters)
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
    await send_ack(outcome.ack)


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
