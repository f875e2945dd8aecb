"""A message's readings as rows of a binary COPY (READING_COLUMNS of ingest.py, PostgreSQL's
binary COPY format), packed straight into bytes.

The group commit writes every reading it commits this way: per reading a few struct packs
and dictionary look-ups, where a tuple of Python values that psycopg dumps one by one
(`write_row`, a coroutine per row) cost more (instruction counts in the README's
Benchmarks). What readings of a line share (line, batch, device, tag; unit, quality,
detail) is encoded once and kept. tests/cloud_collector/test_reading_rows.py holds the
bytes equal to psycopg's own for the same values.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cloud_collector.messages import FastReading

# The binary COPY's header (signature, flags, no extension) and trailer.
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)

_FIELDS = 14  # READING_COLUMNS
_NULL = struct.pack(">i", -1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # timestamptz counts microseconds from it
_MICROSECOND = timedelta(microseconds=1)
_START = struct.Struct(">hiq").pack  # the field count, then `time`
_START_NO_DEVICE_TIME = struct.Struct(">hiqi").pack  # ... and a null `device_time`
_TIME = struct.Struct(">iq").pack
_VALUE = struct.Struct(">id").pack
_END = struct.Struct(">iqi?").pack  # seq, backfill
_INT4 = struct.Struct(">ii").pack
# Kept encodings are forgotten past this many (hostile names cannot grow them for ever).
_KEPT = 10_000


def time_field(t: datetime) -> bytes:
    """A timestamptz in binary, with its length."""
    return _TIME(8, (t - _PG_EPOCH) // _MICROSECOND)  # exact, whatever its offset


def text_field(value: str | None) -> bytes:
    """A text in binary (UTF-8), with its length; None is NULL."""
    if value is None:
        return _NULL
    encoded = value.encode()
    return struct.pack(">i", len(encoded)) + encoded


@dataclass
class Rows:
    """One message's rows, and the batches its readings name (batch -> the line of its
    first reading), which the same pass finds."""

    data: bytearray
    batches: dict[str, str]


@dataclass
class RowWriter:
    """Writes messages of readings as COPY rows; keeps the encodings of the names it met."""

    _names: dict[tuple[str, str | None, str, str], bytes] = field(default_factory=dict)
    _kinds: dict[tuple[str | None, str, str | None, int], bytes] = field(default_factory=dict)

    def rows(
        self,
        records: Sequence[FastReading],
        stream_id: int,
        received: datetime,
        backfill_before: datetime,
    ) -> Rows:
        """`records` as rows of `stream_id`, received at `received`; a reading taken before
        `backfill_before` is marked backfill."""
        names, kinds = self._names, self._kinds
        if len(names) > _KEPT or len(kinds) > _KEPT:
            names.clear()
            kinds.clear()
        received_field = time_field(received)
        batches: dict[str, str] = {}
        out = bytearray()
        # Times are compared and subtracted in their own offset: datetimes that share a
        # tzinfo object skip its utcoffset() calls, which cost more than all the rest of a
        # row. The reader's times carry fixed offsets (JSON has no zones), one object each.
        zone = epoch = backfill = None
        last = None  # the time of the reading before (a poll's readings share one object)
        micros, is_backfill = 0, False
        for r in records:
            time = r.time
            if time is not last:
                last = time
                if time.tzinfo is not zone:
                    zone = time.tzinfo
                    epoch = _PG_EPOCH.astimezone(zone)
                    backfill = backfill_before.astimezone(zone)
                since = time - epoch  # type: ignore[operator]
                micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
                is_backfill = time < backfill  # type: ignore[operator]
            batch = r.batch
            name_key = (r.line, batch, r.device, r.tag)
            named = names.get(name_key)
            if named is None:
                named = names[name_key] = b"".join(text_field(n) for n in name_key)
            if batch is not None and batch not in batches:
                batches[batch] = r.line
            kind_key = (r.unit, r.quality, r.detail, stream_id)
            kind = kinds.get(kind_key)
            if kind is None:
                unit, quality, detail, _ = kind_key
                kind = b"".join(
                    (text_field(unit), text_field(quality), text_field(detail), _INT4(4, stream_id))
                )
                kinds[kind_key] = kind
            device_time = r.device_time
            value = r.value
            if device_time is None:
                out += _START_NO_DEVICE_TIME(_FIELDS, 8, micros, -1)
            else:
                out += _START(_FIELDS, 8, micros) + time_field(device_time)
            out += received_field
            out += named
            out += _NULL if value is None else _VALUE(8, value)
            out += kind
            out += _END(8, r.seq, 1, is_backfill)
        return Rows(out, batches)
