"""The trace and the recall as CSV: their columns, and the recall streamed by the database."""

from __future__ import annotations

from collections.abc import AsyncIterator

from psycopg import AsyncConnection

from cloud_collector.trace.models import Lot, RecallLine
from cloud_collector.trace.recall import RECALL_LINES
from cloud_collector.trace.walk import reached_table

RECALL_CSV_COLUMNS = list(RecallLine.model_fields)
TRACE_CSV_COLUMNS = list(Lot.model_fields)


async def recall_csv(conn: AsyncConnection, lot: Lot) -> AsyncIterator[bytes]:
    """The recall list as CSV lines (RECALL_CSV_COLUMNS order, no header), formatted by the
    database and passed on in blocks as it produces them: memory stays flat however far
    the lot reached."""
    async with reached_table(conn, lot.lot_id, "forward") as reached:
        statement = f"copy ({reached.sql(RECALL_LINES)}) to stdout (format csv)"
        async with (
            conn.cursor() as cur,
            cur.copy(statement, reached.params or None) as copy,  # type: ignore[arg-type]
        ):
            async for block in copy:
                yield bytes(block)
