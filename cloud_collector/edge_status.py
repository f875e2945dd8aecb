"""The latest status of every edge, kept from their retained status messages
(`trace/v1/edges/{edge_id}/status`) in the `edge_status` table, for GET /api/v1/edges.

**Its own broker identity.** The keeper is an MQTT client of its own beside the consumer. A
broker that ties the client id to the username (ours: `use_username_as_clientid`) lets one
identity hold one connection, so the keeper cannot use the consumer's: a second connection
under that name would take over the consumer's session, back and forth. It connects with
TRACE_EDGE_STATUS_USERNAME / TRACE_EDGE_STATUS_PASSWORD (an identity of kind collector:
`tracectl broker add NAME --kind collector`); unset, this collector keeps no edge status
(another may: every keeper receives every status, and the table orders them). A shared
subscription would not do either way: MQTT 5 sends no retained message to one.

**Ordering.** A status is kept only if it is newer than what is stored: by the connection
it belongs to (`session`, the time in the edge's last will), then by the edge's clock, a
will coming after every status of its own connection. So two collectors writing the same
statuses in different orders, or a will read late, never leave an edge shown online when
it went offline or the reverse. From an edge that does not send `session`, the order of
arrival decides.

**Hostile input.** A status is read with the contract's EdgeStatus, strictly (unknown keys,
wrong types, an edge id other than the topic's, more than TRACE_EDGE_STATUS_MAX_BYTES): one
that fails is counted per reason, logged (the first of each reason per edge), kept in the
dead-letter store with the reason, and noted on the edge's row (`refused`,
`last_refused_reason`); the status stored before it stays. A status from an edge the
registry does not accept (`broker_identities.accepts_edge`) is ignored with a log line and
stores nothing. No message and no failure of one stops the keeper.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiomqtt
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_collector import dead_letters, provisioning
from cloud_collector.broker_identities import accepts_edge
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from protocols.mqtt.connection import ENV_FILE, BrokerSettings
from protocols.mqtt.contract import EdgeStatus
from protocols.strict import Strict

log = logging.getLogger(__name__)

# An online status older than this many of the edge's refresh intervals: the edge is silent
# (its connection is half-open, or its status loop stopped). The edge's default interval is
# used when its status does not say.
SILENT_AFTER_INTERVALS = 3
DEFAULT_INTERVAL_S = 10.0
# Log lines of refusals and unregistered edges: the first per (edge, reason), then every
# LOG_EVERY-th; at most this many (edge, reason) pairs remembered.
LOG_EVERY = 1000
_LOG_KEYS = 10_000


class EdgeStatusSettings(BaseSettings):
    """TRACE_EDGE_STATUS_*: the keeper's broker identity and its limits."""

    model_config = SettingsConfigDict(
        env_prefix="TRACE_EDGE_STATUS_", env_file=ENV_FILE, extra="ignore"
    )

    username: str | None = None
    password: str | None = None
    # A larger status is refused unread (its first 64 KiB kept as a dead letter).
    max_bytes: int = Field(default=1024 * 1024, ge=1024, le=256 * 1024 * 1024)

    def broker(self, collector: BrokerSettings) -> BrokerSettings | None:
        """The collector's broker settings under the keeper's identity; None: not set."""
        if self.username is None:
            return None
        return collector.model_copy(update={"username": self.username, "password": self.password})


class StatusRefused(ValueError):
    """A status message the keeper will not store: `kind` is the reason's class (for the
    counters), the message the reason with the fix."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


# An edge id as the contract allows it (protocols.mqtt.contract.Identifier).
_EDGE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def topic_edge(topic: str) -> str | None:
    """The edge a status topic names, or None if it is not a status topic of an edge id
    the contract allows (nothing else reaches the registry or the table)."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != topics.ROOT or parts[4] != "status":
        return None
    return parts[3] if _EDGE_ID.match(parts[3]) else None


def parse_status(topic: str, payload: bytes, max_bytes: int) -> EdgeStatus:
    """The status a message carries, checked as the contract says and against its topic;
    StatusRefused says why not. Pure: no I/O, no clock."""
    edge_id = topic_edge(topic)
    if edge_id is None:
        raise StatusRefused("topic", f"topic {topic[:300]!r} is not {topics.ROOT}/<edge_id>/status")
    if len(payload) > max_bytes:
        raise StatusRefused(
            "oversized",
            f"status of {len(payload)} bytes is over TRACE_EDGE_STATUS_MAX_BYTES "
            f"({max_bytes}): the edge lists more devices or values than a status should "
            "carry, or it is not an edge of ours",
        )
    if not payload:
        raise StatusRefused(
            "empty",
            "empty status: its retained message was cleared (by hand, or an edge being "
            "removed); the last status stored is kept",
        )
    try:
        status = EdgeStatus.model_validate_json(payload)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'status'}: {e['msg']}"
            for e in err.errors(include_input=False, include_url=False)[:3]
        )
        more = err.error_count() - 3
        raise StatusRefused(
            "invalid",
            f"not a trace.v1 edge status: {problems}" + (f" (and {more} more)" if more > 0 else ""),
        ) from None
    if status.edge_id != edge_id:
        raise StatusRefused(
            "edge_id",
            f"status names edge {status.edge_id!r} on the topic of edge {edge_id[:200]!r}: an "
            "edge may speak only for itself",
        )
    return status


@dataclass
class KeeperCounters:
    """What the keeper of this process did; GET /api/v1/edges reports it as `keeper`."""

    received: int = 0
    stored: int = 0
    superseded: int = 0  # older than the status stored (ordering above)
    refused: int = 0
    unregistered: int = 0
    failed: int = 0  # a bug of ours on one message: logged, the next one goes on
    refused_by_reason: Counter[str] = field(default_factory=Counter)
    connected: bool = False
    last_error: str | None = None
    last_message_at: datetime | None = None


_STORE = """
insert into edge_status as s (edge_id, state, session, status_time, received_at, status)
values (%(edge)s, %(state)s, %(session)s, %(time)s, now(), %(status)s)
on conflict (edge_id) do update set
    state = excluded.state,
    session = excluded.session,
    status_time = excluded.status_time,
    received_at = now(),
    state_since = case
        when s.state is not distinct from excluded.state then s.state_since
        when %(retained)s then null
        else now() end,
    -- A will carries nothing but the state: the last online status stays beside it.
    status = case when excluded.state = 'offline' then coalesce(s.status, excluded.status)
                  else excluded.status end
where s.state is null or s.session is null or excluded.session is null
   or (excluded.session, case when excluded.state = 'offline' then 'infinity'::timestamptz
                              else excluded.status_time end)
    > (s.session, case when s.state = 'offline' then 'infinity'::timestamptz
                       else s.status_time end)
"""

_REFUSED = """
insert into edge_status as s (edge_id, refused, last_refused_at, last_refused_reason)
values (%(edge)s, 1, now(), %(reason)s)
on conflict (edge_id) do update set
    refused = s.refused + 1, last_refused_at = now(),
    last_refused_reason = excluded.last_refused_reason
"""


async def store(conn: psycopg.AsyncConnection, status: EdgeStatus, retained: bool) -> bool:
    """Store `status` as its edge's latest unless a newer one is stored; True if stored."""
    cur = await conn.execute(
        _STORE,
        {
            "edge": status.edge_id,
            "state": status.state,
            "session": status.session,
            "time": status.time,
            "retained": retained,
            "status": Jsonb(status.model_dump(mode="json", exclude_none=True)),
        },
    )
    return cur.rowcount == 1


class _Logged:
    """Log the first of each (edge, reason) and every LOG_EVERY-th after: a hostile or
    broken edge resending every second must not fill the log."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str | None, str]] = Counter()

    def __call__(self, edge: str | None, kind: str) -> bool:
        key = (edge, kind)
        if key not in self.seen and len(self.seen) >= _LOG_KEYS:
            self.seen.clear()
        self.seen[key] += 1
        return self.seen[key] % LOG_EVERY == 1


async def handle(
    conn: psycopg.AsyncConnection,
    topic: str,
    payload: bytes,
    retained: bool,
    counters: KeeperCounters,
    settings: EdgeStatusSettings,
    logged: _Logged,
) -> None:
    """One status message: stored, superseded, refused or ignored, and counted."""
    counters.received += 1
    edge = topic_edge(topic)
    if edge is not None and not await accepts_edge(conn, edge):
        counters.unregistered += 1
        if logged(edge, "unregistered"):
            log.warning(
                "edge status on %s ignored: edge %r is not in the registry of broker "
                "identities or was revoked (register it with `tracectl edge add`)",
                topic[:300],
                edge[:200],
            )
        return
    try:
        status = parse_status(topic, payload, settings.max_bytes)
    except StatusRefused as refusal:
        counters.refused += 1
        counters.refused_by_reason[refusal.kind] += 1
        reason = dead_letters.storable(str(refusal), 2000)
        counters.last_error = dead_letters.storable(f"{topic}: {reason}", 500)
        if logged(edge, refusal.kind):
            log.warning("edge status on %s refused: %s", topic[:300], reason)
        kept = f"edge status refused: {reason}"
        await dead_letters.keep(conn, topic, payload, kept, edge, max_bytes=settings.max_bytes)
        if edge is not None:
            await conn.execute(
                _REFUSED, {"edge": dead_letters.storable(edge, 200), "reason": reason}
            )
        return
    if await store(conn, status, retained):
        counters.stored += 1
        # The site version it runs or refused, into the provisioning audit (once each).
        await provisioning.record_edge_report(conn, status)
    else:
        counters.superseded += 1


def _unavailable(err: Exception, conn: psycopg.AsyncConnection) -> bool:
    return isinstance(err, psycopg.OperationalError | psycopg.InterfaceError) or conn.closed


async def keep_edge_status(
    collector: CollectorSettings,
    settings: EdgeStatusSettings,
    counters: KeeperCounters,
    ready: asyncio.Event | None = None,
) -> None:
    """Keep every edge's latest status until cancelled; a lost broker or database is
    reconnected with backoff (the retained statuses arrive again on subscribing)."""
    broker = settings.broker(collector.mqtt)
    if broker is None:
        raise ValueError("TRACE_EDGE_STATUS_USERNAME is unset: the keeper has no identity")
    delay = 0.5
    while True:
        started = time.monotonic()
        try:
            await _keep(collector, broker, settings, counters, ready)
            counters.last_error = "broker ended the subscription"
        except aiomqtt.MqttError as err:
            counters.last_error = f"broker: {err}"
            log.warning("edge status: broker connection lost (%s); again in %.1fs", err, delay)
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            counters.last_error = f"database: {err}"
            log.warning("edge status: database unavailable (%s); again in %.1fs", err, delay)
        finally:
            counters.connected = False
        if time.monotonic() - started > 60:
            delay = 0.5
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 30.0)


async def _keep(
    collector: CollectorSettings,
    broker: BrokerSettings,
    settings: EdgeStatusSettings,
    counters: KeeperCounters,
    ready: asyncio.Event | None,
) -> None:
    logged = _Logged()
    async with (
        await psycopg.AsyncConnection.connect(collector.database_url, autocommit=True) as conn,
        aiomqtt.Client(
            **broker.client_args(),  # type: ignore[arg-type]
            identifier=broker.username,
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client,
    ):
        await client.subscribe(topics.status("+"), qos=1)
        counters.connected = True
        log.info("edge status: keeping %s as %s", topics.status("+"), broker.username)
        if ready is not None:
            ready.set()
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode()
            elif not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            counters.last_message_at = datetime.now(UTC)
            try:
                await handle(
                    conn,
                    str(message.topic),
                    bytes(payload),
                    bool(message.retain),
                    counters,
                    settings,
                    logged,
                )
            except Exception as err:
                if _unavailable(err, conn):
                    raise
                counters.failed += 1
                counters.last_error = f"failed on a status: {type(err).__name__}: {err}"[:500]
                log.exception("edge status: failed on the message on %s", message.topic)


# ---- What the API answers ----------------------------------------------------------------


class EdgeView(Strict):
    """An edge as the fleet view shows it. `state`: online, offline (its will), silent
    (online, but no status for SILENT_AFTER_INTERVALS of its refresh interval), or unknown
    (registered, never heard from, or only refused statuses)."""

    edge_id: str
    state: Literal["online", "offline", "silent", "unknown"]
    state_since: datetime | None  # null: it was so when the collector first saw it
    registered: bool
    status_time: datetime | None  # the edge's clock
    received_at: datetime | None  # the collector's
    age_s: float | None  # since received_at, by the database's clock
    status: EdgeStatus | None  # the last status it published online
    refused: int
    last_refused_at: datetime | None
    last_refused_reason: str | None


class KeeperState(Strict):
    """This process's keeper (null in the answer: this collector keeps no edge status)."""

    connected: bool
    received: int
    stored: int
    superseded: int
    refused: int
    refused_by_reason: dict[str, int]
    unregistered: int
    failed: int
    last_error: str | None
    last_message_at: datetime | None

    @classmethod
    def of(cls, counters: KeeperCounters) -> KeeperState:
        return cls(
            connected=counters.connected,
            received=counters.received,
            stored=counters.stored,
            superseded=counters.superseded,
            refused=counters.refused,
            refused_by_reason=dict(counters.refused_by_reason),
            unregistered=counters.unregistered,
            failed=counters.failed,
            last_error=counters.last_error,
            last_message_at=counters.last_message_at,
        )


class Fleet(Strict):
    edges: list[EdgeView]
    keeper: KeeperState | None


# The fleet: every edge with an identity in force, with its row if it has one; while no
# edge identity was ever registered (a site without the registry), every edge with a row.
# A revoked edge is no longer shown. `%(edge)s` null: all of them.
_FLEET = """
select coalesce(s.edge_id, i.name) as edge_id, s.state, s.state_since, i.name is not null
        as registered, s.status_time, s.received_at,
    extract(epoch from now() - s.received_at)::float8 as age_s, s.status,
    coalesce(s.refused, 0) as refused, s.last_refused_at, s.last_refused_reason
from edge_status s
full join (select name from broker_identities where kind = 'edge' and revoked_at is null) i
    on i.name = s.edge_id
where (%(edge)s::text is null or coalesce(s.edge_id, i.name) = %(edge)s::text)
    and (i.name is not null
         or not exists (select 1 from broker_identities where kind = 'edge'))
order by 1
"""


def _view(row: dict[str, Any]) -> EdgeView:
    status = None
    if row["status"] is not None:
        try:
            status = EdgeStatus.model_validate(row["status"])
        except ValidationError:
            # Stored under an older contract that a newer one reads differently: the row's
            # own columns still say where the edge stands.
            status = None
    state: Literal["online", "offline", "silent", "unknown"] = row["state"] or "unknown"
    if state == "online" and row["age_s"] is not None:
        interval = (status.interval_s if status else None) or DEFAULT_INTERVAL_S
        if row["age_s"] > SILENT_AFTER_INTERVALS * interval:
            state = "silent"
    return EdgeView(
        edge_id=row["edge_id"],
        state=state,
        state_since=row["state_since"],
        registered=row["registered"],
        status_time=row["status_time"],
        received_at=row["received_at"],
        age_s=row["age_s"],
        status=status,
        refused=row["refused"],
        last_refused_at=row["last_refused_at"],
        last_refused_reason=row["last_refused_reason"],
    )


async def fleet(conn: psycopg.AsyncConnection, edge_id: str | None = None) -> list[EdgeView]:
    """Every edge the collector knows (one, with `edge_id`), by edge id."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_FLEET, {"edge": edge_id})
    return [_view(row) for row in await cur.fetchall()]
