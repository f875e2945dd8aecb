"""Validate one MQTT message and commit it idempotently; refuse what can never be committed
as sent, and dead-letter what cannot even be read, each with the reason.

The rows, the batch bookkeeping and the record of the committed sequence range go into the
database in one transaction; only after it commits does the caller publish the ack. A
resend of anything already committed inserts nothing and is acknowledged again; a resend
that differs from what was committed under its numbers is refused (see resends.py).

No message can stop ingest. Whatever fails while one message is handled (a record the
contract refuses, a time too far past the collector's clock, a value the database will not
take, a bug) rolls back that message, and the failure is narrowed to the records that
cause it: those are refused in the ack (the edge quarantines them) and the message is
kept in the dead-letter store; every other record of it is committed. Only an unavailable
database (connection lost, server shutting down, out of resources, a deadlock) is raised
to the caller: no ack, the consumer reconnects and the edge resends.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import psycopg
from psycopg.types.json import Jsonb

from cloud_collector import dead_letters, genealogy, resends, rollups
from cloud_collector.epcis import parties
from cloud_collector.messages import MAX_MESSAGE_BYTES, Message, Rejected, read, refuse_future
from protocols.mqtt.contract import (
    MAX_REFUSALS,
    Ack,
    BatchEvent,
    DeviceEvent,
    ObjectEventRecord,
    Reading,
    ReadingsDropped,
    Record,
    Refusal,
    TagSpecs,
    TransformationEventRecord,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_STAGING = """
create temp table if not exists readings_in (like readings including defaults)
    on commit delete rows
"""
# A reading row as COPY writes it (binary), in this order: ingest, group commit and the
# benchmarks' same-run COPY all use these.
READING_COLUMNS = (
    "time, device_time, received_at, line_id, batch_id, device, tag, value, unit, quality,"
    " detail, stream_id, seq, backfill"
)
READING_TYPES = [
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "text",
    "text",
    "text",
    "text",
    "float8",
    "text",
    "text",
    "text",
    "int4",
    "int8",
    "bool",
]
_STREAM = """
with found as (
    select stream_id from edge_streams where edge_id = %(edge)s and stream = %(stream)s
        and epoch = %(epoch)s
), made as (
    insert into edge_streams (edge_id, stream, epoch)
    select %(edge)s, %(stream)s, %(epoch)s where not exists (select 1 from found)
    on conflict (edge_id, stream, epoch) do nothing
    returning stream_id
)
select stream_id from found union all select stream_id from made
"""
# The readings a message adds (a resend adds none), the batches they name, and the batches'
# rollups, in one statement: the rollups count exactly the rows inserted.
_READINGS_FROM_STAGING = f"""
with inserted as (
    insert into readings ({READING_COLUMNS}) select {READING_COLUMNS} from readings_in
    on conflict do nothing
    returning batch_id, line_id, device, tag, unit, value, quality, time
), batches_seen as (
    insert into batches (batch_id, line_id, edge_id)
    select distinct batch_id, line_id, %(edge)s from inserted where batch_id is not null
    on conflict (batch_id) do nothing
), stats as ({rollups.stats_upsert("inserted")}
), minutes as ({rollups.minutes_upsert("inserted")}
)
select count(*) from inserted
"""
_BATCH_EVENT = """
insert into batch_events (stream_id, seq, time, kind, line_id, batch_id, actor, received_at,
    numbered_by_rule)
values (%(stream_id)s, %(seq)s, %(time)s, %(kind)s, %(line)s, %(batch)s, %(by)s, %(received)s,
    %(numbered_by_rule)s)
on conflict (stream_id, seq) do nothing
"""
_BATCH_STARTED = """
insert into batches (batch_id, line_id, edge_id, started_at, started_by, numbered_by_rule)
values (%(batch)s, %(line)s, %(edge)s, %(time)s, %(by)s, %(numbered_by_rule)s)
on conflict (batch_id) do update set started_at = excluded.started_at,
    started_by = excluded.started_by, numbered_by_rule = excluded.numbered_by_rule
where batches.started_at is null or batches.started_at > excluded.started_at
"""
_BATCH_ENDED = """
insert into batches (batch_id, line_id, edge_id, ended_at, ended_by)
values (%(batch)s, %(line)s, %(edge)s, %(time)s, %(by)s)
on conflict (batch_id) do update set ended_at = excluded.ended_at, ended_by = excluded.ended_by
where batches.ended_at is null or batches.ended_at < excluded.ended_at
"""
_DEVICE_EVENT = """
insert into device_events (stream_id, seq, time, kind, line_id, device, detail, received_at)
values (%(stream_id)s, %(seq)s, %(time)s, %(kind)s, %(line)s, %(device)s, %(detail)s,
        %(received)s)
on conflict (stream_id, seq) do nothing
"""
_READINGS_DROPPED = """
insert into readings_dropped (stream_id, seq, time, dropped_stream, count, first_seq, last_seq,
    policy, received_at)
values (%(stream_id)s, %(seq)s, %(time)s, %(stream)s, %(count)s, %(first_seq)s, %(last_seq)s,
        %(policy)s, %(received)s)
on conflict (stream_id, seq) do nothing
"""
_TRACE_EVENT = """
insert into trace_events (event_id, event_type, event_time, action, biz_step, disposition,
    read_point, biz_location, line_id, batch_id, operator, device, flags, biz_transactions,
    source_edge, stream_id, seq, body)
values (%(event_id)s, %(event_type)s, %(time)s, %(action)s, %(biz_step)s, %(disposition)s,
    %(read_point)s, %(biz_location)s, %(line)s, %(batch)s, %(operator)s, %(device)s,
    %(flags)s, %(biz_transactions)s, %(edge)s, %(stream_id)s, %(seq)s, %(body)s)
on conflict do nothing
"""
_EVENT_ITEM = """
insert into event_items (event_id, role, position, epc, epc_class, quantity, uom, gtin, lot,
    serial, sscc, raw, unknown_reason)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
_EVENT_DOCUMENT = """
insert into event_documents (event_id, type, id) values (%s, %s, %s) on conflict do nothing
"""
_TAG_SPEC = """
insert into tag_specs (device, tag, unit, low, high) values (%s, %s, %s, %s, %s)
on conflict (device, tag) do update set unit = excluded.unit, low = excluded.low,
    high = excluded.high, updated_at = now()
"""
_GAPS_OVERLAPPING = """
delete from sequence_gaps where stream_id = %s and first_missing <= %s and last_missing >= %s
returning first_missing, last_missing, before_time, after_time
"""
_ADD_GAP = """
insert into sequence_gaps (stream_id, first_missing, last_missing, before_time, after_time)
values (%s, %s, %s, %s, %s) on conflict do nothing
"""
_SET_HIGH_WATER = """
update edge_streams set high_water = %s, high_water_time = %s where stream_id = %s
"""
_COMMIT_RECORD = """
insert into stream_commits (stream_id, first_seq, last_seq, records, inserted)
values (%s, %s, %s, %s, %s)
"""
_HIGH_WATER_FOR_UPDATE = """
select high_water, high_water_time from edge_streams where stream_id = %s for update
"""
_CLEAR_STAGING = "delete from readings_in"

# A reading committed this long after it was taken is marked as backfill (an outage drained).
BACKFILL_AFTER = timedelta(seconds=60)
# A record dated further than this past the collector's clock is refused (TRACE_MAX_SKEW_S).
MAX_SKEW = timedelta(minutes=5)

# SQLSTATE classes that say the database cannot be used now, whatever the message: a lost
# connection (08), a deadlock or serialization failure (40), no resources (53), lock not
# available (55P03), shutdown or cancel (57), a system error (58). Anything else is the
# message's own fault and is refused, never retried.
_UNAVAILABLE = ("08", "40", "53", "55P03", "57", "58")


# A deadlock or serialization failure (SQLSTATE class 40) is the database settling a race
# between collectors by rolling one back: that transaction is tried again, a few times,
# before it counts as the database being unavailable.
ROLLBACK_RETRIES = 5


def rolled_back(err: BaseException) -> bool:
    return isinstance(err, psycopg.Error) and (err.sqlstate or "").startswith("40")


async def retrying(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """`attempt()` (one transaction), again after a deadlock or serialization failure."""
    for n in range(1, ROLLBACK_RETRIES + 1):
        try:
            return await attempt()
        except psycopg.Error as err:
            if not rolled_back(err) or n == ROLLBACK_RETRIES:
                raise
            log.warning("%s rolled back by the database (%s); trying again", what, err.sqlstate)
            await asyncio.sleep(random.uniform(0.01, 0.05) * n)
    raise AssertionError("unreachable")


class EventIdTaken(Exception):
    """A new record names an event id that another committed event has."""


class _TooManyRefusals(Exception):
    """More separate runs of refused records than one ack may list."""


def unavailable(err: BaseException, conn: psycopg.AsyncConnection) -> bool:
    """True when `err` means the database cannot be used now (no ack; the edge resends),
    False when the message is at fault (it is refused or dead-lettered)."""
    if conn.broken or conn.closed or isinstance(err, psycopg.InterfaceError):
        return True
    if isinstance(err, psycopg.OperationalError):
        return err.sqlstate is None or err.sqlstate.startswith(_UNAVAILABLE)
    return False


@dataclass(frozen=True)
class Outcome:
    ack: Ack | None  # None when the message was only dead-lettered (no range to answer)
    inserted: int = 0
    reason: str | None = None  # why it was dead-lettered, or why records were refused
    refused: int = 0  # records refused in the ack
    conflicts: int = 0  # of them, resends that differ from what was committed


@dataclass(frozen=True)
class _Context:
    received: datetime
    backfill_before: datetime
    ids: dict[str, str]


@dataclass
class _Settled:
    inserted: int
    refused: dict[int, str]
    conflicts: int = 0
    whole: str | None = None  # the whole message is refused, for this reason


async def ingest(
    conn: psycopg.AsyncConnection,
    topic: str,
    payload: bytes,
    backfill_after: timedelta = BACKFILL_AFTER,
    *,
    max_skew: timedelta = MAX_SKEW,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Outcome:
    """Settle one message: commit it, refuse what of it can never be committed as sent,
    or dead-letter it. Raises only when the database is unavailable (see `unavailable`):
    then nothing is acknowledged and the edge resends."""
    try:
        message = read(topic, payload, max_bytes)
    except Rejected as rejected:
        await dead_letters.keep(
            conn, topic, payload, rejected.reason, rejected.edge_id, max_bytes=max_bytes
        )
        return Outcome(ack=None, reason=rejected.reason)
    received = datetime.now(UTC)
    refuse_future(message, received + max_skew, max_skew)
    ids = {"edge": message.edge_id, "stream": message.stream, "epoch": message.epoch}
    settled = await _settle(conn, message, _Context(received, received - backfill_after, ids))
    runs = _refusal_runs(settled.refused)
    summary: str | None
    if settled.whole is not None:
        summary, runs = settled.whole, []
        refused = len(message.records)
    else:
        refused = len(settled.refused)
        summary = _summary(runs, refused, len(message.records)) if runs else None
    ack = Ack(
        edge_id=message.edge_id,
        stream=message.stream,
        epoch=message.epoch,
        first_seq=message.first_seq,
        last_seq=message.last_seq,
        duplicate=settled.inserted == 0 and summary is None,
        refused=dead_letters.storable(summary, 2000) if summary else None,
        refusals=[
            Refusal(first_seq=r.first_seq, last_seq=r.last_seq, reason=r.reason) for r in runs
        ],
    )
    if summary is not None:
        await dead_letters.keep(
            conn, topic, payload, summary, message.edge_id, message.where, refused=True
        )
    return Outcome(ack, settled.inserted, summary, refused, settled.conflicts)


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return dead_letters.storable(f"{type(err).__name__}: {text}", 500)


async def _settle(conn: psycopg.AsyncConnection, message: Message, ctx: _Context) -> _Settled:
    """Commit the message in one transaction; if that fails for a reason of the message's
    own, commit again narrowing the failure down to the records that cause it (each tried
    alone under a savepoint). Only what no record can be blamed for refuses it whole."""
    what = (
        f"message {message.edge_id}/{message.stream}/{message.epoch} "
        f"{message.first_seq}..{message.last_seq}"
    )

    async def attempt(isolate: bool) -> _Settled:
        async with conn.transaction():
            return await _commit(conn, message, ctx, isolate=isolate)

    try:
        return await retrying(lambda: attempt(False), what)
    except Exception as err:
        if unavailable(err, conn):
            raise
        if isinstance(err, _TooManyRefusals):
            return _Settled(0, {}, whole=str(err))
        log.warning(
            "message %s/%s/%s %d..%d failed (%s): finding the records at fault",
            message.edge_id,
            message.stream,
            message.epoch,
            message.first_seq,
            message.last_seq,
            _describe(err),
        )
    try:
        return await retrying(lambda: attempt(True), what)
    except Exception as err:
        if unavailable(err, conn):
            raise
        log.exception(
            "message %s/%s/%s %d..%d cannot be committed; refused whole",
            message.edge_id,
            message.stream,
            message.epoch,
            message.first_seq,
            message.last_seq,
        )
        if isinstance(err, _TooManyRefusals):
            return _Settled(0, {}, whole=str(err))
        return _Settled(0, {}, whole=f"the collector could not commit it: {_describe(err)}")


def _refusal_runs(refused: dict[int, str]) -> list[Refusal]:
    """Refused seqs as runs of consecutive numbers with the same reason."""
    runs: list[Refusal] = []
    for seq in sorted(refused):
        reason = dead_letters.storable(refused[seq], 2000)
        if runs and runs[-1].last_seq == seq - 1 and runs[-1].reason == reason:
            runs[-1] = Refusal(first_seq=runs[-1].first_seq, last_seq=seq, reason=reason)
        else:
            runs.append(Refusal(first_seq=seq, last_seq=seq, reason=reason))
    return runs


def _check_refusal_runs(refused: dict[int, str]) -> None:
    if len(refused) > MAX_REFUSALS and len(_refusal_runs(refused)) > MAX_REFUSALS:
        raise _TooManyRefusals(
            f"{len(refused)} records refused in more than {MAX_REFUSALS} separate runs, more "
            f"than one ack may list: the whole message is refused; first: "
            f"{refused[min(refused)]}"
        )


def _summary(runs: list[Refusal], refused: int, total: int) -> str:
    parts = [
        f"seq {r.first_seq}"
        + (f"..{r.last_seq}" if r.last_seq != r.first_seq else "")
        + f": {r.reason}"
        for r in runs
    ]
    return f"{refused} of {total} records refused: " + "; ".join(parts)


async def _commit(
    conn: psycopg.AsyncConnection, message: Message, ctx: _Context, isolate: bool
) -> _Settled:
    stream_id = await register_stream(conn, ctx.ids)
    # Taken first and held to the end: the comparison with what is committed and the
    # commit itself see the same high-water mark, whichever collector runs them.
    row = await (await conn.execute(_HIGH_WATER_FOR_UPDATE, (stream_id,))).fetchone()
    high_water, high_water_time = (int(row[0]), row[1]) if row else (-1, None)
    refused = dict(message.refused)
    valid = [r for r in message.records if r is not None and r.seq not in refused]
    duplicates: set[int] = set()
    conflicts = 0
    if message.first_seq <= high_water:
        below = [r for r in valid if r.seq <= high_water]
        comparison = await resends.compare(conn, stream_id, below)
        duplicates = comparison.duplicates
        conflicts = len(comparison.conflicts)
        for seq in comparison.conflicts:
            refused[seq] = resends.CONFLICT_REASON
        if conflicts:
            log.error(
                "CONFLICT: %d records of %s/%s/%s %d..%d differ from what was committed under "
                "their numbers; refused and kept with both versions (record_conflicts)",
                conflicts,
                message.edge_id,
                message.stream,
                message.epoch,
                message.first_seq,
                message.last_seq,
            )
    _check_refusal_runs(refused)
    fresh = [r for r in valid if r.seq not in refused and r.seq not in duplicates]
    if isolate:
        inserted = await _insert_isolating(conn, fresh, stream_id, ctx, refused)
    else:
        inserted = await _insert(conn, fresh, stream_id, ctx)
    for position, (first, last) in enumerate(_committed_runs(message.records, refused)):
        # The message's inserted count goes with its first committed run.
        count = last.seq - first.seq + 1
        await conn.execute(
            _COMMIT_RECORD,
            (stream_id, first.seq, last.seq, count, inserted if position == 0 else 0),
        )
        high_water, high_water_time = await _track_gaps(
            conn, stream_id, first, last, high_water, high_water_time
        )
    return _Settled(inserted, refused, conflicts)


def _committed_runs(
    records: Sequence[Record | None], refused: dict[int, str]
) -> list[tuple[Record, Record]]:
    runs: list[tuple[Record, Record]] = []
    start: Record | None = None
    previous: Record | None = None
    for record in records:
        if record is None or record.seq in refused:
            if start is not None and previous is not None:
                runs.append((start, previous))
            start = previous = None
            continue
        start = start or record
        previous = record
    if start is not None and previous is not None:
        runs.append((start, previous))
    return runs


async def _insert(
    conn: psycopg.AsyncConnection,
    records: Sequence[Record],
    stream_id: int,
    ctx: _Context,
    clear_staging: bool = False,
) -> int:
    readings = [r for r in records if isinstance(r, Reading)]
    inserted = 0
    if readings:
        inserted += await _copy_readings(
            conn, readings, stream_id, ctx.received, ctx.backfill_before, ctx.ids, clear_staging
        )
    params: dict[str, object] = {"stream_id": stream_id, "received": ctx.received, **ctx.ids}
    for record in records:
        if not isinstance(record, Reading):
            inserted += await _insert_event(conn, record, params)
    return inserted


async def _insert_isolating(
    conn: psycopg.AsyncConnection,
    records: Sequence[Record],
    stream_id: int,
    ctx: _Context,
    refused: dict[int, str],
) -> int:
    """Insert `records`, each half that fails split again under its own savepoint until
    the records at fault stand alone: those are refused, all others inserted."""
    inserted = 0

    async def attempt(chunk: Sequence[Record]) -> None:
        nonlocal inserted
        if not chunk:
            return
        try:
            async with conn.transaction():  # a savepoint within the message's transaction
                count = await _insert(conn, chunk, stream_id, ctx, clear_staging=True)
            inserted += count
        except Exception as err:
            if unavailable(err, conn):
                raise
            if len(chunk) > 1:
                middle = len(chunk) // 2
                await attempt(chunk[:middle])
                await attempt(chunk[middle:])
                return
            log.error(
                "record %s of %s/%s/%s refused: %s",
                chunk[0].seq,
                ctx.ids["edge"],
                ctx.ids["stream"],
                ctx.ids["epoch"],
                _describe(err),
            )
            refused[chunk[0].seq] = f"the collector could not commit it: {_describe(err)}"
            _check_refusal_runs(refused)

    await attempt(records)
    return inserted


async def register_stream(conn: psycopg.AsyncConnection, ids: dict[str, str]) -> int:
    """The stream_id of (edge, stream, epoch) in `ids`, made at its first message."""
    for _ in range(2):  # twice: another collector may create it between our select and insert
        row = await (await conn.execute(_STREAM, ids)).fetchone()
        if row is not None:
            return int(row[0])
    raise RuntimeError(f"cannot register stream {ids}: edge_streams refused it twice")


async def _copy_readings(
    conn: psycopg.AsyncConnection,
    readings: list[Reading],
    stream_id: int,
    received: datetime,
    backfill_before: datetime,
    ids: dict[str, str],
    clear_staging: bool = False,
) -> int:
    await conn.execute(_STAGING)
    if clear_staging:  # rows a savepoint before this one staged and committed
        await conn.execute(_CLEAR_STAGING)
    async with conn.cursor() as cur:
        sql = f"copy readings_in ({READING_COLUMNS}) from stdin (format binary)"
        async with cur.copy(sql) as copy:
            copy.set_types(READING_TYPES)
            for r in readings:
                await copy.write_row(
                    (
                        r.time,
                        r.device_time,
                        received,
                        r.line,
                        r.batch,
                        r.device,
                        r.tag,
                        r.value,
                        r.unit,
                        r.quality,
                        r.detail,
                        stream_id,
                        r.seq,
                        r.time < backfill_before,
                    )
                )
        row = await (await cur.execute(_READINGS_FROM_STAGING, ids)).fetchone()
    return int(row[0]) if row else 0


async def _insert_event(
    conn: psycopg.AsyncConnection,
    event: BatchEvent
    | DeviceEvent
    | ReadingsDropped
    | ObjectEventRecord
    | TransformationEventRecord
    | TagSpecs,
    params: dict[str, object],
) -> int:
    params = {**params, **event.model_dump(), "seq": event.seq}
    if isinstance(event, BatchEvent):
        # The contract leaves it out of its JSON (and model_dump) when false.
        params["numbered_by_rule"] = event.numbered_by_rule
        if (await conn.execute(_BATCH_EVENT, params)).rowcount <= 0:
            return 0
        follow = _BATCH_STARTED if event.kind == "batch_started" else _BATCH_ENDED
        await conn.execute(follow, params)
        return 1
    if isinstance(event, ObjectEventRecord | TransformationEventRecord):
        return await _insert_trace_event(conn, event, params)
    if isinstance(event, TagSpecs):
        async with conn.cursor() as cur:
            await cur.executemany(
                _TAG_SPEC, [(t.device, t.tag, t.unit, t.low, t.high) for t in event.specs]
            )
        return 1
    sql = _DEVICE_EVENT if isinstance(event, DeviceEvent) else _READINGS_DROPPED
    return max((await conn.execute(sql, params)).rowcount, 0)


async def _insert_trace_event(
    conn: psycopg.AsyncConnection,
    event: ObjectEventRecord | TransformationEventRecord,
    params: dict[str, object],
) -> int:
    if isinstance(event, ObjectEventRecord):
        event_type, docs = "ObjectEvent", event.biz_transactions
        roles = [("observed", event.items)]
        extra = {
            "action": event.action,
            "disposition": event.disposition,
            "biz_location": event.biz_location,
            "operator": event.operator,
            "device": event.device,
        }
    else:
        event_type, docs = "TransformationEvent", []
        roles = [("input", event.inputs), ("output", event.outputs)]
        extra = {
            "action": None,
            "disposition": None,
            "biz_location": None,
            "operator": ", ".join(event.operators) or None,
            "device": None,
        }
    row = {
        **params,
        **extra,
        "event_id": event.event_id,
        "event_type": event_type,
        "time": event.time,
        "biz_step": event.biz_step,
        "read_point": event.read_point,
        "line": event.line,
        "batch": event.batch,
        "flags": event.flags,
        "biz_transactions": Jsonb([d.model_dump() for d in docs]),
        "body": Jsonb(event.model_dump(mode="json")),
    }
    if (await conn.execute(_TRACE_EVENT, row)).rowcount <= 0:
        # Resends of committed records never get here (resends.compare settles them): the
        # event id is taken by another event, which an ack must not pretend to be this one.
        raise EventIdTaken(
            f"event_id {event.event_id!r} is already committed as another event: every event "
            "needs an id of its own"
        )
    items = [
        (
            event.event_id,
            role,
            i,
            it.epc,
            it.epc_class,
            it.quantity,
            it.uom,
            it.gtin,
            it.lot,
            it.serial,
            it.sscc,
            it.raw,
            it.unknown_reason,
        )
        for role, role_items in roles
        for i, it in enumerate(role_items)
    ]
    async with conn.cursor() as cur:
        await cur.executemany(_EVENT_ITEM, items)
        await cur.executemany(_EVENT_DOCUMENT, [(event.event_id, d.type, d.id) for d in docs])
        if isinstance(event, ObjectEventRecord) and event.parties:
            await cur.executemany(parties.INSERT, parties.of_record(event.event_id, event.parties))
    if isinstance(event, TransformationEventRecord):
        await genealogy.project_transformation(conn, event, str(params["edge"]))
    else:
        await genealogy.project_object_event(conn, event)
    return 1


async def _track_gaps(
    conn: psycopg.AsyncConnection,
    stream_id: int,
    first_record: Record,
    last_record: Record,
    high_water: int,
    high_water_time: datetime | None,
) -> tuple[int, datetime | None]:
    """Keep the stream's holes and when each happened (the times of the records on both
    sides) for one committed run: a run past the high-water mark opens one before it; a
    late run (a resend, the backlog) fills what it covers. Returns the new mark."""
    first, last = first_record.seq, last_record.seq
    first_time, last_time = first_record.time, last_record.time
    if first > high_water + 1:
        await conn.execute(
            _ADD_GAP, (stream_id, high_water + 1, first - 1, high_water_time, first_time)
        )
    if first <= high_water:
        for gap_first, gap_last, before, after in await (
            await conn.execute(_GAPS_OVERLAPPING, (stream_id, last, first))
        ).fetchall():
            if gap_first < first:
                await conn.execute(_ADD_GAP, (stream_id, gap_first, first - 1, before, first_time))
            if gap_last > last:
                await conn.execute(_ADD_GAP, (stream_id, last + 1, gap_last, last_time, after))
    if last > high_water:
        await conn.execute(_SET_HIGH_WATER, (last, last_time, stream_id))
        return last, last_time
    return high_water, high_water_time
