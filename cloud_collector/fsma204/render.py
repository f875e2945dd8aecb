"""The spreadsheet as CSV (streamed, a line at a time) and as XLSX (typed cells, frozen
header, autofilter; a sheet of the KDEs the records lack; a sheet saying what the request
was and where each column comes from, as § 1.1455(c)(3)(ii) asks: "along with any other
information needed to understand the information in the spreadsheet"). Text never runs as
a formula in either (cloud_collector/spreadsheet_cells.py)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import date, time
from decimal import Decimal
from typing import Any

from openpyxl import Workbook
from openpyxl.utils import get_column_letter

from cloud_collector.fsma204.kdes import COLUMNS, CTE, EVENT_ID, TLC, Row
from cloud_collector.spreadsheet_cells import csv_cell, xlsx_header, xlsx_row, xlsx_sheet

SHEET = "FSMA 204"
MISSING_SHEET = "Missing KDEs"
MISSING_COLUMNS = ["Row", CTE, TLC, EVENT_ID, "Missing KDE", "What Would Supply It"]
ABOUT_SHEET = "About"
_WIDTHS = {0: 30, 1: 12, 2: 10, 3: 22, 4: 30}  # column index -> width; the rest 28


def _cell(value: Any) -> Any:
    """A CSV cell: numbers as numbers, times as hh:mm:ss, text neutralised
    (cloud_collector/spreadsheet_cells.py)."""
    if value is None:
        return ""
    if isinstance(value, time):
        return value.isoformat(timespec="seconds")
    if isinstance(value, bool | int | float | Decimal | date):
        return value
    return csv_cell(str(value))


def csv_text(lines: Iterable[Iterable[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows([_cell(v) for v in line] for line in lines)
    return out.getvalue()


async def csv_lines(chunks: AsyncIterator[list[Row]], header: list[str]) -> AsyncIterator[str]:
    """The header, then the rows as the database produces them, a chunk at a time."""
    yield csv_text([header])
    async for rows in chunks:
        yield csv_text(r.cells for r in rows)


# A sheet of its own for a workbook that carries more than the spreadsheet (a recall
# case's record): its name, its header, its rows.
Sheet = tuple[str, list[str], list[list[Any]]]


async def xlsx(
    chunks: AsyncIterator[list[Row]],
    header: list[str],
    about: list[tuple[str, str]],
    before: Sequence[Sheet] = (),
) -> bytes:
    """The workbook: the sheets `before` (if any), the sortable sheet, the missing KDEs,
    and what it all means."""
    wb = Workbook(write_only=True)
    for name, names, lines in before:
        xlsx_sheet(wb, name, names, lines)
    ws = wb.create_sheet(SHEET)
    ws.freeze_panes = "A2"
    for i in range(len(COLUMNS)):
        ws.column_dimensions[get_column_letter(i + 1)].width = _WIDTHS.get(i, 28)
    ws.append(xlsx_header(ws, header))
    gaps: list[list[Any]] = []
    n = 1
    async for rows in chunks:
        for row in rows:
            n += 1
            # Typed: dates yyyy-mm-dd, times h:mm:ss, numbers; text never a formula.
            ws.append(xlsx_row(ws, row.cells))
            gaps += [
                [n, row.values[CTE], row.values[TLC], row.values[EVENT_ID], m.kde, m.detail]
                for m in row.missing
            ]
    ws.auto_filter.ref = f"A1:{get_column_letter(len(COLUMNS))}{n}"
    xlsx_sheet(wb, MISSING_SHEET, MISSING_COLUMNS, gaps)
    info = wb.create_sheet(ABOUT_SHEET)
    info.append(xlsx_header(info, ["Item", "Value"]))
    for item in about:
        info.append(xlsx_row(info, item))
    for column, source in COLUMNS.items():
        info.append(xlsx_row(info, [f"Column: {column}", source]))
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
