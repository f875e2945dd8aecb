"""Validate one MQTT message and commit it idempotently, or dead-letter it with the reason.

The rows, the batch bookkeeping and the record of the committed sequence range go into the
database in one transaction; only after it commits does the caller publish the ack. A
resend of anything already committed inserts nothing and is acknowledged again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from cloud_collector import genealogy, rollups
from protocols.mqtt import topics
from protocols.mqtt.contract import (
    Ack,
    BatchEvent,
    DeviceEvent,
    Envelope,
    ObjectEventRecord,
    Reading,
    ReadingsDropped,
    TagSpecs,
    TransformationEventRecord,
)

log = logging.getLogger(__name__)

_STAGING = """
create temp table if not exists readings_in (like readings including defaults)
    on commit delete rows
"""
_COPY_COLUMNS = (
    "time, device_time, received_at, line_id, batch_id, device, tag, value, unit, quality,"
    " detail, stream_id, seq, backfill"
)
_COPY_TYPES = [
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
    insert into readings ({_COPY_COLUMNS}) select {_COPY_COLUMNS} from readings_in
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
insert into batch_events (stream_id, seq, time, kind, line_id, batch_id, actor, received_at)
values (%(stream_id)s, %(seq)s, %(time)s, %(kind)s, %(line)s, %(batch)s, %(by)s, %(received)s)
on conflict (stream_id, seq) do nothing
"""
_BATCH_STARTED = """
insert into batches (batch_id, line_id, edge_id, started_at, started_by)
values (%(batch)s, %(line)s, %(edge)s, %(time)s, %(by)s)
on conflict (batch_id) do update set started_at = excluded.started_at,
    started_by = excluded.started_by
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
_HIGH_WATER = """
select high_water, high_water_time from edge_streams where stream_id = %s for update
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
_DEAD_LETTER = """
insert into dead_letters (topic, edge_id, reason, payload) values (%s, %s, %s, %s)
"""


class Rejected(Exception):
    """A message that can never be ingested as it is; it goes to the dead-letter store."""

    def __init__(self, reason: str, edge_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.edge_id = edge_id


@dataclass(frozen=True)
class Outcome:
    ack: Ack | None  # None when the message was dead-lettered
    inserted: int = 0
    reason: str | None = None


def parse(topic: str, payload: bytes) -> Envelope:
    """The envelope in `payload`, checked against its topic; Rejected says why not."""
    try:
        edge_id, stream = topics.parse_data(topic)
    except ValueError as err:
        raise Rejected(str(err)) from err
    try:
        envelope = Envelope.model_validate_json(payload)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}"
            for e in err.errors()[:10]
        )
        raise Rejected(f"invalid {stream} message: {problems}", edge_id) from err
    if envelope.edge_id != edge_id:
        raise Rejected(
            f"payload edge_id {envelope.edge_id!r} does not match topic edge {edge_id!r}: "
            "an edge may publish only under its own topic",
            edge_id,
        )
    if envelope.stream != stream:
        raise Rejected(
            f"payload stream {envelope.stream!r} does not match topic stream {stream!r}", edge_id
        )
    return envelope


# A reading committed this long after it was taken is marked as backfill (an outage drained).
BACKFILL_AFTER = timedelta(seconds=60)


async def ingest(
    conn: psycopg.AsyncConnection,
    topic: str,
    payload: bytes,
    backfill_after: timedelta = BACKFILL_AFTER,
) -> Outcome:
    """Commit one message. Database errors propagate (no ack: the edge will resend)."""
    try:
        envelope = parse(topic, payload)
    except Rejected as rejected:
        await dead_letter(conn, topic, payload, rejected.reason, rejected.edge_id)
        return Outcome(ack=None, reason=rejected.reason)
    received = datetime.now(UTC)
    async with conn.transaction():
        inserted = await _commit(conn, envelope, received, received - backfill_after)
    ack = Ack(
        edge_id=envelope.edge_id,
        stream=envelope.stream,
        epoch=envelope.epoch,
        first_seq=envelope.first_seq,
        last_seq=envelope.last_seq,
        duplicate=inserted == 0,
    )
    return Outcome(ack=ack, inserted=inserted)


async def _stream_id(conn: psycopg.AsyncConnection, ids: dict[str, str]) -> int:
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
) -> int:
    await conn.execute(_STAGING)
    async with conn.cursor() as cur:
        sql = f"copy readings_in ({_COPY_COLUMNS}) from stdin (format binary)"
        async with cur.copy(sql) as copy:
            copy.set_types(_COPY_TYPES)
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
        return 0  # this event id was committed before: a resend
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
    if isinstance(event, TransformationEventRecord):
        await genealogy.project_transformation(conn, event, str(params["edge"]))
    else:
        await genealogy.project_object_event(conn, event)
    return 1


async def _commit(
    conn: psycopg.AsyncConnection, env: Envelope, received: datetime, backfill_before: datetime
) -> int:
    ids = {"edge": env.edge_id, "stream": env.stream, "epoch": env.epoch}
    stream_id = await _stream_id(conn, ids)
    readings = [r for r in env.records if isinstance(r, Reading)]
    inserted = 0
    if readings:
        inserted += await _copy_readings(conn, readings, stream_id, received, backfill_before, ids)
    event_params: dict[str, object] = {"stream_id": stream_id, "received": received, **ids}
    for record in env.records:
        if not isinstance(record, Reading):
            inserted += await _insert_event(conn, record, event_params)
    await conn.execute(
        _COMMIT_RECORD, (stream_id, env.first_seq, env.last_seq, len(env.records), inserted)
    )
    await _track_gaps(conn, stream_id, env)
    return inserted


async def _track_gaps(conn: psycopg.AsyncConnection, stream_id: int, env: Envelope) -> None:
    """Keep the stream's holes and when each happened (the times of the records on both
    sides): a message past the high-water mark opens one before it; a late message (a
    resend, the backlog) fills what it covers."""
    first, last = env.first_seq, env.last_seq
    first_time, last_time = env.records[0].time, env.records[-1].time
    row = await (await conn.execute(_HIGH_WATER, (stream_id,))).fetchone()
    high_water, high_water_time = (int(row[0]), row[1]) if row else (-1, None)
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


async def dead_letter(
    conn: psycopg.AsyncConnection, topic: str, payload: bytes, reason: str, edge_id: str | None
) -> None:
    log.warning("dead-lettered a message on %s: %s", topic, reason)
    async with conn.transaction():
        await conn.execute(_DEAD_LETTER, (topic, edge_id, reason, payload))
