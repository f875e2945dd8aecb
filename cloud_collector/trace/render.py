"""The trace and the recall as spreadsheets: their columns, the recall list streamed by the
database as CSV, and a recall by condition as an XLSX workbook (the same recall list, with
its batches, stock on hand by place and gaps). Text never runs as a formula in either
(cloud_collector/spreadsheet_cells.py)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from openpyxl import Workbook
from psycopg import AsyncConnection

from cloud_collector.spreadsheet_cells import xlsx_sheet
from cloud_collector.trace.models import (
    ConditionBatch,
    ConditionRecall,
    Lot,
    PlaceStock,
    RecallLine,
)
from cloud_collector.trace.recall import RECALL_LINES
from cloud_collector.trace.walk import reached_table

RECALL_CSV_COLUMNS = list(RecallLine.model_fields)
TRACE_CSV_COLUMNS = list(Lot.model_fields)
ON_HAND_COLUMNS = list(PlaceStock.model_fields)
CONDITION_BATCH_COLUMNS = list(ConditionBatch.model_fields)
# The workbook of a recall by condition: the recall list first (the sheet people filter).
RECALL_SHEET, ON_HAND_SHEET, BATCHES_SHEET = "Recall", "On hand by place", "Batches"
GAPS_SHEET, ABOUT_SHEET = "Gaps", "About"


async def recall_csv(conn: AsyncConnection, start: Lot | list[int]) -> AsyncIterator[bytes]:
    """The recall list of a lot, or of the lots `start` names (those a recall by condition
    starts from: trace.condition_roots), as CSV lines (RECALL_CSV_COLUMNS order, no header),
    formatted by the database and passed on in blocks as it produces them: memory stays
    flat however far the lots reached."""
    roots = start.lot_id if isinstance(start, Lot) else start
    async with reached_table(conn, roots, "forward") as reached:
        statement = f"copy ({reached.sql(RECALL_LINES)}) to stdout (format csv)"
        async with (
            conn.cursor() as cur,
            cur.copy(statement, reached.params or None) as copy,  # type: ignore[arg-type]
        ):
            async for block in copy:
                yield bytes(block)


def _value(value: Any) -> Any:
    # A time as the recall CSV writes it, with its offset: Excel keeps no time zone, and a
    # time without one would be read in the reader's.
    return value.isoformat() if isinstance(value, datetime) else value


def _rows(items: Iterable[Any], columns: list[str]) -> list[list[Any]]:
    return [[_value(getattr(x, c)) for c in columns] for x in items]


def condition_recall_xlsx(answer: ConditionRecall) -> bytes:
    """The recall by condition as a workbook: the recall list (RECALL_CSV_COLUMNS, the
    recall CSV's columns), the stock on hand by place, the batches that ran while the
    condition held, the gaps, and what was asked."""
    wb = Workbook(write_only=True)
    xlsx_sheet(wb, RECALL_SHEET, RECALL_CSV_COLUMNS, _rows(answer.lines, RECALL_CSV_COLUMNS))
    xlsx_sheet(wb, ON_HAND_SHEET, ON_HAND_COLUMNS, _rows(answer.on_hand, ON_HAND_COLUMNS))
    batches = _rows(answer.batches, CONDITION_BATCH_COLUMNS)
    xlsx_sheet(wb, BATCHES_SHEET, CONDITION_BATCH_COLUMNS, batches)
    xlsx_sheet(wb, GAPS_SHEET, ["gap"], [[g] for g in answer.gaps])
    about = [
        ("Request", f"recall by condition: {answer.condition.described()}"),
        ("Generated (UTC)", datetime.now(UTC).isoformat(timespec="seconds")),
        ("Affected lots", len(answer.lots)),
        (RECALL_SHEET, "each lot's shipment lines, then what it has left and where"),
        (ON_HAND_SHEET, "the recall lines not shipped, summed per place and unit"),
    ]
    xlsx_sheet(wb, ABOUT_SHEET, ["Item", "Value"], about)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
