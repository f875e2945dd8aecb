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


# Each lot with its hold in force, if any (at most one: lot_holds_in_force): a hash join
# against the few holds in force, not a probe per lot.
_LOTS_WITH_HOLDS = """
select l.*, h.hold_id is not null as held, h.reason as hold_reason, h.held_at as held_since,
       h.held_by
from (select {columns} from lots where {where}) l
left join lot_holds h on h.lot_id = l.lot_id and h.released_at is null
"""


async def lots_where(conn: AsyncConnection, where: str, params: tuple[Any, ...]) -> list[Lot]:
    cur = conn.cursor(row_factory=dict_row)
    sql = _LOTS_WITH_HOLDS.format(columns=_LOT_COLUMNS, where=where)
    rows = await (await cur.execute(sql, params)).fetchall()  # type: ignore[arg-type]
    return [Lot(**r) for r in rows]


async def fetch(conn: AsyncConnection, sql: str, *params: Any) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(sql, params)).fetchall()


async def fetch_named(
    conn: AsyncConnection, sql: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(sql, params)).fetchall()  # type: ignore[arg-type]
