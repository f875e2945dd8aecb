"""Which lots a request covers, and their rows, read from a server-side cursor so that a
recall reaching half the plant streams in flat memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, tzinfo

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from cloud_collector import trace
from cloud_collector.fsma204.kdes import Places, Row, build
from cloud_collector.fsma204.sql import CTE_ROWS, LOCATIONS, PRODUCT_LOTS


async def rows(
    conn: AsyncConnection,
    lot_ids: list[int],
    start: datetime | None = None,
    end: datetime | None = None,
    zone: tzinfo = UTC,
    chunk: int = 2000,
) -> AsyncIterator[list[Row]]:
    """The CTE rows of these lots (and of the transformations that used or made them),
    sorted by event time then lot, in chunks as the database produces them; dates and
    times in `zone`."""
    name = f"fsma204_{uuid.uuid4().hex[:12]}"
    params = {"lots": lot_ids, "start": start, "end": end}
    async with conn.transaction(), conn.cursor(name=name, row_factory=dict_row) as cur:
        places = await _places(conn)
        await cur.execute(CTE_ROWS, params)
        while batch := await cur.fetchmany(chunk):
            yield [build(r, places, zone) for r in batch]


async def _places(conn: AsyncConnection) -> Places:
    cur = conn.cursor(row_factory=dict_row)
    return {r["location_id"]: r for r in await (await cur.execute(LOCATIONS)).fetchall()}


async def product_lots(conn: AsyncConnection, gtin: str) -> list[int]:
    cur = await conn.execute(PRODUCT_LOTS, (gtin,))
    return [r[0] for r in await cur.fetchall()]


async def recall_lots(conn: AsyncConnection, lot: trace.Lot) -> list[int]:
    """Every lot of the forward trace: the recall's lots."""
    return await trace.reachable(conn, lot.lot_id, "forward")
