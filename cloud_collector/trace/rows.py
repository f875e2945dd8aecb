"""Rows into models: the statement helpers the trace modules share, and lots by a condition."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from cloud_collector.trace.models import Lot

_LOT_COLUMNS = (
    "lot_id, gtin, lot_code, quantity, uom, origin, batch_id, supplier, supplier_lot,"
    " shipped_quantity, consumed_quantity, quantity_note"
)


async def lots_where(conn: AsyncConnection, where: str, params: tuple[Any, ...]) -> list[Lot]:
    cur = conn.cursor(row_factory=dict_row)
    rows = await (
        await cur.execute(f"select {_LOT_COLUMNS} from lots where {where}", params)
    ).fetchall()
    return [Lot(**r) for r in rows]


async def fetch(conn: AsyncConnection, sql: str, *params: Any) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(sql, params)).fetchall()


async def fetch_named(
    conn: AsyncConnection, sql: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(sql, params)).fetchall()  # type: ignore[arg-type]
