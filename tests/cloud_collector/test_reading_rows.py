"""reading_rows.RowWriter writes exactly the binary COPY rows psycopg's own `write_row` would
write for the same values (READING_COLUMNS, READING_TYPES), whatever the readings hold, and
PostgreSQL reads them back as the readings say."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg._copy_base import format_row_binary  # the formatter behind Copy.write_row
from psycopg.adapt import Transformer
from psycopg.pq import Format
from pydantic_core import TzInfo

from cloud_collector.ingest import READING_COLUMNS, READING_TYPES
from cloud_collector.messages import FastReading
from cloud_collector.reading_rows import SIGNATURE, TRAILER, RowWriter
from tests.conftest import Services
from tests.hypothesis_profiles import load_from_env

load_from_env()

RECEIVED = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
BACKFILL_BEFORE = RECEIVED - timedelta(seconds=60)
_OIDS = {"timestamptz": 1184, "text": 25, "float8": 701, "int4": 23, "int8": 20, "bool": 16}


def _row(r: FastReading, stream_id: int) -> tuple[Any, ...]:
    return (
        r.time,
        r.device_time,
        RECEIVED,
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
        r.time < BACKFILL_BEFORE,
    )


def _psycopg_rows(records: list[FastReading], stream_id: int) -> bytes:
    transformer = Transformer()
    transformer.set_dumper_types([_OIDS[t] for t in READING_TYPES], Format.BINARY)
    out = bytearray()
    for r in records:
        format_row_binary(_row(r, stream_id), transformer, out)
    return bytes(out)


def _reading(seq: int, **fields: Any) -> FastReading:
    reading: dict[str, Any] = {
        "kind": "reading",
        "seq": seq,
        "time": RECEIVED - timedelta(seconds=seq % 1000),
        "line": "line-1",
        "batch": "B-1",
        "device": "plc-1",
        "tag": "temperature",
        "value": 81.5,
    }
    reading.update(fields)
    return FastReading(**reading)


CASES: list[FastReading] = [
    _reading(0),
    _reading(1, unit="Cel", quality="good", detail=None),
    _reading(2, value=None, quality="bad", detail="sensor open"),
    _reading(3, quality="uncertain", value=-0.0, batch=None),
    _reading(4, device_time=datetime(2026, 11, 25, 9, 0, 1, 5, tzinfo=UTC), unit="°C"),
    _reading(5, time=datetime(2026, 11, 25, 13, 0, 0, 999999, tzinfo=timezone(timedelta(hours=1)))),
    _reading(6, time=datetime(2000, 1, 1, tzinfo=UTC), value=1e308, tag="温度"),
    _reading(2**63 - 1, time=datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), value=-1e-308),
    _reading(8, line="line-2", device="plc-2", tag="t" * 128, detail="d" * 500),
]


def test_the_rows_are_psycopgs_and_each_batch_is_named_by_its_first_line() -> None:
    writer = RowWriter()
    for stream_id in (1, 2**31 - 1):  # the second time from encodings kept
        rows = writer.rows(CASES, stream_id, RECEIVED, BACKFILL_BEFORE)
        assert bytes(rows.data) == _psycopg_rows(CASES, stream_id)
        assert rows.batches == {"B-1": "line-1"}


_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20
)
_time = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2099, 12, 31),
    # pydantic's own offsets, as the reader makes them, and the standard library's
    timezones=st.sampled_from([TzInfo(0), TzInfo(-3600), timezone(timedelta(hours=5, minutes=30))]),
)
_readings = st.lists(
    st.builds(
        lambda fields: FastReading(**fields),
        st.fixed_dictionaries(
            {
                "kind": st.just("reading"),
                "seq": st.integers(0, 2**63 - 1),
                "time": _time,
                "line": _text,
                "batch": st.none() | _text,
                "device": _text,
                "tag": _text,
                "value": st.none() | st.floats(allow_nan=False, allow_infinity=False),
            },
            optional={
                "device_time": st.none() | _time,
                "unit": st.none() | _text,
                "quality": st.sampled_from(["good", "bad", "uncertain"]),
                "detail": st.none() | _text,
            },
        ),
    ),
    min_size=1,
    max_size=20,
)


@given(_readings)
def test_any_readings_are_written_as_psycopg_writes_them(readings: list[FastReading]) -> None:
    rows = RowWriter().rows(readings, 7, RECEIVED, BACKFILL_BEFORE)
    assert bytes(rows.data) == _psycopg_rows(readings, 7)
    first: dict[str, str] = {}
    for r in readings:
        if r.batch is not None:
            first.setdefault(r.batch, r.line)
    assert rows.batches == first


@pytest.fixture
async def conn(services: Services) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        yield c


async def test_postgresql_reads_the_rows_as_the_readings_say(conn: psycopg.AsyncConnection) -> None:
    rows = RowWriter().rows(CASES, 3, RECEIVED, BACKFILL_BEFORE)
    async with conn.transaction(force_rollback=True):
        await conn.execute("create temp table rows_back (like readings) on commit drop")
        async with conn.cursor() as cur:
            sql = f"copy rows_back ({READING_COLUMNS}) from stdin (format binary)"
            async with cur.copy(sql) as copy:
                await copy.write(SIGNATURE + rows.data + TRAILER)
            await cur.execute(f"select {READING_COLUMNS} from rows_back order by seq")
            back = await cur.fetchall()
    expected = sorted((_row(r, 3) for r in CASES), key=lambda row: row[12])
    assert len(back) == len(expected)
    for got, want in zip(back, expected, strict=True):
        assert got[:7] == want[:7] and got[8:] == want[8:]
        value, wanted = got[7], want[7]
        assert value == wanted and math.copysign(1, value or 1) == math.copysign(1, wanted or 1)
