"""Arrays packed for statement parameters (cloud_collector/binary_arrays.py) read back by
PostgreSQL as the values they were made of: each element type, with NULLs, empty, and over
generated values; and the rollups' parameters as the group commit sends them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_core import TzInfo

from cloud_collector import rollups
from cloud_collector.binary_arrays import (
    Float8s,
    Int8s,
    PackedArray,
    Texts,
    Timestamptzs,
    packed,
)
from cloud_collector.messages import FastReading
from tests.conftest import Services

T = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
CASES: list[tuple[type[PackedArray], str, list[Any]]] = [
    (Texts, "text", ["a", "", "°C 温度", None, "x" * 300]),
    (Texts, "text", []),
    (Int8s, "int8", [0, -1, 2**63 - 1, -(2**63), None, 5]),
    (Float8s, "float8", [0.0, -2.5, 1e300, -1e-300, None, 72.5]),
    (Float8s, "float8", [None, None]),
    (
        Timestamptzs,
        "timestamptz",
        [
            T,
            T.astimezone(timezone(timedelta(hours=8))),
            datetime(2000, 1, 1, tzinfo=UTC),
            datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=TzInfo(-3600)),
            None,
        ],
    ),
]


@pytest.fixture
async def conn(services: Services) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        yield c


async def _back(
    conn: psycopg.AsyncConnection, kind: type[PackedArray], sql_type: str, values: Sequence[Any]
) -> list[Any]:
    cur = await conn.execute(f"select %b::{sql_type}[]", (kind(values),))
    row = await cur.fetchone()
    assert row is not None
    return list(row[0])


@pytest.mark.parametrize(("kind", "sql_type", "values"), CASES)
async def test_postgresql_reads_each_element_type_back(
    conn: psycopg.AsyncConnection, kind: type[PackedArray], sql_type: str, values: list[Any]
) -> None:
    assert await _back(conn, kind, sql_type, values) == values


_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(st.none() | _text, max_size=30),
    ints=st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=30),
    floats=st.lists(st.none() | st.floats(allow_nan=False, allow_infinity=False), max_size=30),
)
async def test_generated_values_come_back_as_they_went(
    conn: psycopg.AsyncConnection, texts: list[Any], ints: list[Any], floats: list[Any]
) -> None:
    cur = await conn.execute(
        "select %b::text[], %b::int8[], %b::float8[]", (Texts(texts), Int8s(ints), Float8s(floats))
    )
    row = await cur.fetchone()
    assert row is not None and [list(c) for c in row] == [texts, ints, floats]


async def test_the_rollups_parameters_go_as_the_statements_cast_them(
    conn: psycopg.AsyncConnection,
) -> None:
    """Every column of the two upserts packed as its kind: PostgreSQL accepts the packed
    arrays where each cast names their type."""
    reading = FastReading(
        kind="reading",
        seq=1,
        time=T,
        line="l",
        batch="B",
        device="d",
        tag="t",
        value=3.5,
        unit="°C",
    )
    parts = rollups.Parts()
    parts.add([reading])
    for sql, columns, kinds in (
        (rollups.STATS_PARTS_UPSERT, parts.stats_arrays({}), rollups.STATS_PARTS_KINDS),
        (rollups.MINUTES_PARTS_UPSERT, parts.minutes_arrays(), rollups.MINUTES_PARTS_KINDS),
    ):
        select = "select * from unnest(" + sql.split("unnest(", 1)[1].split(")", 1)[0] + ")"
        cur = await conn.execute(select, packed(columns, kinds))
        assert [list(r) for r in await cur.fetchall()] == [
            list(r) for r in zip(*columns, strict=True)
        ]
    # Sent as their own types, so a cast is a no-op, never a conversion.
    cur = await conn.execute(
        "select pg_typeof(%b)::text, pg_typeof(%b)::text, pg_typeof(%b)::text, pg_typeof(%b)::text",
        (Texts(["a"]), Int8s([1]), Float8s([1.0]), Timestamptzs([T])),
    )
    assert await cur.fetchone() == (
        "text[]",
        "bigint[]",
        "double precision[]",
        "timestamp with time zone[]",
    )
