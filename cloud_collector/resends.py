"""A resend must equal what was committed under its numbers.

Only a message that reaches back to or below its stream's high-water mark pays for this:
its records at or below the mark are looked up by (stream_id, seq) in the table their kind
lives in and compared field by field. An equal record is a duplicate (nothing to do); a
record with no committed row is new (a hole being filled, or a record refused before); a
different one is a conflict: refused, kept with both versions in record_conflicts, and
raised as an alarm. A line PC restored from an old disk image numbers again from an old
point: every record it sends under numbers already committed lands here.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from protocols.mqtt.contract import (
    BatchEvent,
    DeviceEvent,
    ObjectEventRecord,
    Reading,
    ReadingsDropped,
    TransformationEventRecord,
)

log = logging.getLogger(__name__)

CONFLICT_REASON = (
    "differs from the record committed under the same sequence number: a resend must equal "
    "what was committed (a line PC restored from an old disk image numbers again from an old "
    "point); both versions are kept in the collector's conflicts list"
)


@dataclass(frozen=True)
class _Shape:
    """How one kind of record is stored: the query of its committed rows by sequence
    range, and its fields in the query's column order (after seq)."""

    sql: str
    fields: tuple[str, ...]


# One table per kind; each keeps the edge's own fields, so equality is field by field.
_READING = _Shape(
    """select seq, time, device_time, line_id, batch_id, device, tag, value, unit, quality,
        detail from readings where stream_id = %s and seq between %s and %s""",
    ("time", "device_time", "line", "batch", "device", "tag", "value", "unit", "quality", "detail"),
)
_BATCH_EVENT = _Shape(
    """select seq, time, kind, line_id, batch_id, actor from batch_events
    where stream_id = %s and seq between %s and %s""",
    ("time", "kind", "line", "batch", "by"),
)
_DEVICE_EVENT = _Shape(
    """select seq, time, kind, line_id, device, detail from device_events
    where stream_id = %s and seq between %s and %s""",
    ("time", "kind", "line", "device", "detail"),
)
_READINGS_DROPPED = _Shape(
    """select seq, time, dropped_stream, count, first_seq, last_seq, policy
    from readings_dropped where stream_id = %s and seq between %s and %s""",
    ("time", "stream", "count", "first_seq", "last_seq", "policy"),
)
# A trace event's body is the record as received (model_dump in JSON mode).
_TRACE_EVENT = _Shape(
    "select seq, body from trace_events where stream_id = %s and seq between %s and %s",
    ("body",),
)
_SHAPES: dict[type, _Shape] = {
    Reading: _READING,
    BatchEvent: _BATCH_EVENT,
    DeviceEvent: _DEVICE_EVENT,
    ReadingsDropped: _READINGS_DROPPED,
    ObjectEventRecord: _TRACE_EVENT,
    TransformationEventRecord: _TRACE_EVENT,
}

_KEEP_CONFLICT = """
insert into record_conflicts (stream_id, seq, kind, fields, committed, received,
    received_digest)
values (%s, %s, %s, %s, %s, %s, %s)
on conflict (stream_id, seq, received_digest) do update set
    repeats = record_conflicts.repeats + 1, last_seen = now()
"""


@dataclass
class Comparison:
    duplicates: set[int]  # seqs committed before with the same content
    conflicts: set[int]  # seqs committed before with other content (refused, kept)


def _fields_of(record: Any, shape: _Shape) -> dict[str, Any]:
    if shape is _TRACE_EVENT:
        return {"body": record.model_dump(mode="json")}
    return {name: getattr(record, name) for name in shape.fields}


def _json_ready(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def compare(
    conn: psycopg.AsyncConnection, stream_id: int, records: Sequence[Any]
) -> Comparison:
    """Compare `records` (committed at or below the high-water mark, by their seq) with
    what is stored under their numbers; keep every conflict with both versions."""
    result = Comparison(set(), set())
    by_shape: dict[_Shape, list[Any]] = {}
    for record in records:
        shape = _SHAPES.get(type(record))
        if shape is not None:  # tag specs are state, not history: the last word counts
            by_shape.setdefault(shape, []).append(record)
    for shape, group in by_shape.items():
        first, last = min(r.seq for r in group), max(r.seq for r in group)
        stored: dict[int, list[dict[str, Any]]] = {}
        for row in await (await conn.execute(shape.sql, (stream_id, first, last))).fetchall():
            stored.setdefault(int(row[0]), []).append(dict(zip(shape.fields, row[1:], strict=True)))
        for record in group:
            versions = stored.get(record.seq)
            if not versions:
                continue  # never committed: new (a hole filled, or refused before)
            received = _fields_of(record, shape)
            if any(received == committed for committed in versions):
                result.duplicates.add(record.seq)
                continue
            committed = versions[0]
            differing = [name for name in shape.fields if received[name] != committed[name]]
            if shape is _TRACE_EVENT:
                body, kept = received["body"], committed["body"]
                differing = sorted(
                    k for k in body.keys() | kept.keys() if body.get(k) != kept.get(k)
                )
            await _keep(conn, stream_id, record, differing, committed, received)
            result.conflicts.add(record.seq)
    return result


async def _keep(
    conn: psycopg.AsyncConnection,
    stream_id: int,
    record: Any,
    fields: list[str],
    committed: dict[str, Any],
    received: dict[str, Any],
) -> None:
    def as_json(values: dict[str, Any]) -> dict[str, Any]:
        if "body" in values:
            return dict(values["body"])
        return {name: _json_ready(value) for name, value in values.items()}

    received_json = as_json(received)
    digest = hashlib.sha256(
        json.dumps(received_json, sort_keys=True, ensure_ascii=True).encode()
    ).digest()
    await conn.execute(
        _KEEP_CONFLICT,
        (
            stream_id,
            record.seq,
            record.kind,
            fields,
            Jsonb(as_json(committed)),
            Jsonb(received_json),
            digest,
        ),
    )
