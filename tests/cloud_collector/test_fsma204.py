"""FSMA 204 sortable spreadsheets on a hand-built chain with known answers, through the
real ingest and the HTTP API.

The chain:  MILL supplies FLOUR + SUGAR on PO (dock-1) --B1--> DOUGH --B2--> BREAD
            BREAD: 400 EA on SH-1 (the ERP knows the customer), 200 EA on SH-2 (it does not)
Master data is complete but for what each test expects to be reported missing: the SUGAR
product and its TLC source, dock-2's phone number, SH-2's recipient.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook

from cloud_collector.auth import Role
from cloud_collector.fsma204 import kdes
from cloud_collector.fsma204.kdes import COLUMNS
from tests.cloud_collector.plant import Plant, Products, bake, lot_item
from tests.conftest import RunningCollector, Services


def gtin(body: str) -> str:
    """A GTIN-14 of 13 digits and its check digit (element strings are checked)."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


class Chain(Plant):
    """A plant whose products are its own (GTINs of its own), so that a request by product
    sees only this test's lots."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        base = f"{uuid.uuid4().int % 10**10:010d}"
        self.flour, self.sugar, self.dough, self.bread = (
            gtin(base + item) for item in ("001", "002", "003", "004")
        )


MILL = "Mill Ltd, 1 Mill Road, Springfield, IL 62701, USA, +1 217 555 0100"
DOCK_1 = "Bakery Plant, 5 Oven St, Dayton, OH 45402, USA, +1 937 555 0199"
DOCK_2 = "Bakery Plant dock 2, 5 Oven St, Dayton, OH 45402, USA"
LINE_1 = "Bakery Plant line 1, 5 Oven St, Dayton, OH 45402, USA, +1 937 555 0198"
DC = "Bakery Co DC, 9 Market St, Columbus, OH 43004, USA, +1 614 555 0142"
LINE_1_FFRN = "FFRN 12345678901"
MILL_URL = "https://mill.example/tlc"

# The names the FDA gets, pinned: changing one is a decision, not a refactoring.
HEADER = [
    "Critical Tracking Event",
    "Event Date (UTC)",
    "Event Time (UTC)",
    "Traceability Lot Code",
    "Traceability Lot Code Assigned by the Supplier",
    "Product Description",
    "Quantity",
    "Unit of Measure",
    "Location Description for the Immediate Previous Source",
    "Location Description for Where the Food Was Received",
    "Location Description for the Immediate Subsequent Recipient",
    "Location Description for the Location From Which You Shipped the Food",
    "Location Description for the Traceability Lot Code Source",
    "Traceability Lot Code Source Reference",
    "New Traceability Lot Code",
    "Reference Document Type",
    "Reference Document Number",
    "Commodity",
    "Variety",
    "Date You Received the Food",
    "Quantity of the Food Received",
    "Unit of Measure of the Food Received",
    "Location Description for the Farm Where the Food Was Harvested",
    "Name of the Field, Growing Area or Container",
    "Business Name and Phone Number for the Harvester",
    "Date of Harvesting",
    "Location Description for Where the Food Was Cooled",
    "Date of Cooling",
    "Harvest Date Range and Locations for the Trip",
    "GTIN",
    "Lot Code of the Food Received",
    "Unit IDs",
    "Event ID",
    "Missing KDEs",
]


@pytest.fixture
async def chain(services: Services, collector: RunningCollector) -> Chain:
    p = Chain(services)
    FLOUR, DOUGH, BREAD = p.flour, p.dough, p.bread
    flour = p.lot("FLOUR")
    own = Products(flour=p.flour, sugar=p.sugar, dough=p.dough, bread=p.bread)
    await bake(p, own, cake=False, bread_shipments=(400, 200))
    t = p.tag
    imports = {
        "/api/v1/erp/products": [
            {
                "gtin": FLOUR,
                "name": "Wheat flour type 55",
                "pack_size": "25 kg",
                "pack_style": "bag",
            },
            {
                "gtin": DOUGH,
                "name": "Bread dough",
                "pack_size": "600 kg",
                "pack_style": "tub",
            },
            {"gtin": BREAD, "name": "White loaf", "pack_size": "800 g", "pack_style": "bag"},
        ],
        "/api/v1/erp/customers": [
            {"customer_id": f"C1-{t}", "name": "Bakery Co", "address": "9 Market St"}
        ],
        "/api/v1/erp/shipments": [
            {
                "shipment": f"SH-1-{t}",
                "order_id": f"SO-1-{t}",
                "customer_id": f"C1-{t}",
                "ship_to": f"DC-{t}",
            }
        ],
        "/api/v1/erp/purchase-orders": [{"po": f"PO-{t}", "supplier": f"MILL-{t}"}],
        "/api/v1/erp/locations": [
            {
                "location_id": f"MILL-{t}",
                "name": "Mill Ltd",
                "address": "1 Mill Road, Springfield, IL 62701, USA",
                "phone": "+1 217 555 0100",
                "gln": "0614141000050",
            },
            {
                "location_id": "dock-1",
                "name": "Bakery Plant",
                "address": "5 Oven St, Dayton, OH 45402, USA",
                "phone": "+1 937 555 0199",
            },
            {
                "location_id": "dock-2",
                "name": "Bakery Plant dock 2",
                "address": "5 Oven St, Dayton, OH 45402, USA",
            },
            {
                "location_id": "line-1",
                "name": "Bakery Plant line 1",
                "address": "5 Oven St, Dayton, OH 45402, USA",
                "phone": "+1 937 555 0198",
                "tlc_source_reference": LINE_1_FFRN,
            },
            {
                "location_id": f"DC-{t}",
                "name": "Bakery Co DC",
                "address": "9 Market St, Columbus, OH 43004, USA",
                "phone": "+1 614 555 0142",
            },
        ],
        "/api/v1/erp/tlc-sources": [
            {"gtin": FLOUR, "lot_code": flour, "location_id": f"MILL-{t}", "reference": MILL_URL}
        ],
    }
    async with collector.client(Role.importer) as api:
        for path, rows in imports.items():
            r = await api.put(path, json=rows)
            assert r.status_code == 200, (path, r.text)
    return p


async def get(collector: RunningCollector, path: str, **params: str) -> httpx.Response:
    async with collector.client(Role.reader) as api:
        return await api.get(path, params=params)


def read_csv(r: httpx.Response) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(r.text)))
    assert lines[0] == HEADER
    return [dict(zip(HEADER, line, strict=True)) for line in lines[1:]]


def expected(p: Chain) -> dict[str, dict[str, str]]:
    """Every row of the chain, by a short name, as the CSV spells it."""
    t, blank = p.tag, dict.fromkeys(HEADER, "")
    FLOUR, SUGAR, DOUGH, BREAD = p.flour, p.sugar, p.dough, p.bread

    def row(
        seq: int, cte: str, lot: str, gtin: str, product: str, qty: str, uom: str, **kdes: str
    ) -> dict[str, str]:
        return (
            blank
            | {
                "Critical Tracking Event": cte,
                "Event Date (UTC)": "2026-11-20",
                "Event Time (UTC)": f"06:0{seq}:00",
                "Traceability Lot Code": p.lot(lot),
                "Product Description": product,
                "Quantity": qty,
                "Unit of Measure": uom,
                "GTIN": gtin,
                "Event ID": f"{p.edge}-{seq}",
            }
            | kdes
        )

    made_on_line_1 = {
        "Location Description for the Traceability Lot Code Source": LINE_1,
        "Traceability Lot Code Source Reference": LINE_1_FFRN,
    }
    dock_2_phone = "location 'dock-2' has no phone number: PUT /api/v1/erp/locations"
    sugar_product = f"Product Description: no product {SUGAR}: PUT /api/v1/erp/products"
    return {
        "flour received": row(
            0,
            "Receiving",
            "FLOUR",
            FLOUR,
            "Wheat flour type 55, 25 kg bag",
            "1000",
            "KGM",
            **{
                "Location Description for the Immediate Previous Source": MILL,
                "Location Description for Where the Food Was Received": DOCK_1,
                "Location Description for the Traceability Lot Code Source": MILL,
                "Traceability Lot Code Source Reference": MILL_URL,
                "Reference Document Type": "Purchase Order",
                "Reference Document Number": f"PO-{t}",
            },
        ),
        "sugar received": row(
            0,
            "Receiving",
            "SUGAR",
            SUGAR,
            "",
            "200",
            "KGM",
            **{
                "Location Description for the Immediate Previous Source": MILL,
                "Location Description for Where the Food Was Received": DOCK_1,
                "Reference Document Type": "Purchase Order",
                "Reference Document Number": f"PO-{t}",
                "Missing KDEs": f"{sugar_product}; Location Description for the Traceability "
                f"Lot Code Source: the supplier has not said where lot '{p.lot('SUGAR')}' got "
                "its code: PUT /api/v1/erp/tlc-sources",
            },
        ),
        "dough made": row(
            1,
            "Transformation (food produced)",
            "DOUGH",
            DOUGH,
            "Bread dough, 600 kg tub",
            "600",
            "KGM",
            **made_on_line_1,
            **{"Reference Document Type": "Batch Record", "Reference Document Number": f"B1-{t}"},
        ),
        "flour used": row(
            1,
            "Transformation (food used)",
            "FLOUR",
            FLOUR,
            "Wheat flour type 55, 25 kg bag",
            "500",
            "KGM",
            **{"New Traceability Lot Code": p.lot("DOUGH")},
        ),
        "sugar used": row(
            1,
            "Transformation (food used)",
            "SUGAR",
            SUGAR,
            "",
            "100",
            "KGM",
            **{"New Traceability Lot Code": p.lot("DOUGH"), "Missing KDEs": sugar_product},
        ),
        "bread made": row(
            2,
            "Transformation (food produced)",
            "BREAD",
            BREAD,
            "White loaf, 800 g bag",
            "600",
            "EA",
            **made_on_line_1,
            **{"Reference Document Type": "Batch Record", "Reference Document Number": f"B2-{t}"},
        ),
        "dough used": row(
            2,
            "Transformation (food used)",
            "DOUGH",
            DOUGH,
            "Bread dough, 600 kg tub",
            "600",
            "KGM",
            **{"New Traceability Lot Code": p.lot("BREAD")},
        ),
        "bread shipped on SH-1": row(
            3,
            "Shipping",
            "BREAD",
            BREAD,
            "White loaf, 800 g bag",
            "400",
            "EA",
            **made_on_line_1,
            **{
                "Location Description for the Immediate Subsequent Recipient": DC,
                "Location Description for the Location From Which You Shipped the Food": DOCK_2,
                "Reference Document Type": "Despatch Advice; Sales Order",
                "Reference Document Number": f"SH-1-{t}; SO-1-{t}",
                "Missing KDEs": "Location Description for the Location From Which You Shipped "
                f"the Food: {dock_2_phone}",
            },
        ),
        "bread shipped on SH-2": row(
            4,
            "Shipping",
            "BREAD",
            BREAD,
            "White loaf, 800 g bag",
            "200",
            "EA",
            **made_on_line_1,
            **{
                "Location Description for the Location From Which You Shipped the Food": DOCK_2,
                "Reference Document Type": "Despatch Advice",
                "Reference Document Number": f"SH-2-{t}",
                "Missing KDEs": "Location Description for the Immediate Subsequent Recipient: "
                f"the ERP has not said whom shipment 'SH-2-{t}' went to: PUT "
                "/api/v1/erp/shipments; Location Description for the Location From Which You "
                f"Shipped the Food: {dock_2_phone}",
            },
        ),
    }


def test_the_columns_are_pinned() -> None:
    assert kdes.header() == HEADER
    assert kdes.header("America/Chicago")[2] == "Event Time (America/Chicago)"
    assert len(COLUMNS) == len(HEADER)


async def test_a_lot_its_transformation_and_shipments_as_csv(
    chain: Chain, collector: RunningCollector
) -> None:
    p, want = chain, expected(chain)
    rows = read_csv(await get(collector, f"/api/v1/fsma204/lots/01/{p.bread}/10/{p.lot('BREAD')}"))
    # Sorted by event time, then lot: at B2, BREAD (made) sorts before DOUGH (used).
    assert rows == [
        want["bread made"],
        want["dough used"],
        want["bread shipped on SH-1"],
        want["bread shipped on SH-2"],
    ]


async def test_a_recall_holds_every_event_of_the_forward_trace(
    chain: Chain, collector: RunningCollector
) -> None:
    p, want = chain, expected(chain)
    flour = f"(01){p.flour}(10){p.lot('FLOUR')}"
    rows = read_csv(await get(collector, f"/api/v1/fsma204/lots/{flour}/recall"))
    # B1 comes whole (the sugar used too): its KDEs link the new lot to every lot used.
    # The sugar's own receipt is not part of the flour's recall.
    assert rows == [
        want["flour received"],
        want["dough made"],
        want["flour used"],
        want["sugar used"],
        want["bread made"],
        want["dough used"],
        want["bread shipped on SH-1"],
        want["bread shipped on SH-2"],
    ]


async def test_a_product_over_a_date_range(chain: Chain, collector: RunningCollector) -> None:
    want = expected(chain)
    path = f"/api/v1/fsma204/products/{chain.sugar}"
    rows = read_csv(await get(collector, path, **{"from": "2026-11-20", "to": "2026-11-20"}))
    assert rows == [
        want["sugar received"],
        want["dough made"],
        want["flour used"],
        want["sugar used"],
    ]
    later = read_csv(await get(collector, path, **{"from": "2026-11-21", "to": "2026-11-30"}))
    assert later == []
    # In Honolulu (UTC-10) the 06:00 UTC receipt was made on the evening of the 19th: the
    # dates, the times and the range of days are the plant's when it says where it is.
    local = await get(
        collector, path, tz="Pacific/Honolulu", **{"from": "2026-11-19", "to": "2026-11-19"}
    )
    assert local.text.splitlines()[0].split(",")[2] == "Event Time (Pacific/Honolulu)"
    honolulu = list(csv.reader(io.StringIO(local.text)))[1:]
    assert [(r[0], r[1], r[2], r[3]) for r in honolulu] == [
        ("Receiving", "2026-11-19", "20:00:00", chain.lot("SUGAR")),
        ("Transformation (food produced)", "2026-11-19", "20:01:00", chain.lot("DOUGH")),
        ("Transformation (food used)", "2026-11-19", "20:01:00", chain.lot("FLOUR")),
        ("Transformation (food used)", "2026-11-19", "20:01:00", chain.lot("SUGAR")),
    ]
    nowhere = await get(
        collector, path, tz="Mars/Olympus", **{"from": "2026-11-19", "to": "2026-11-19"}
    )
    assert nowhere.status_code == 422 and "Mars/Olympus" in nowhere.text
    # Longer than a file name may be (zoneinfo looks names up as paths): refused, not a 500.
    overlong = await get(
        collector, path, tz="Zalgo" * 100, **{"from": "2026-11-19", "to": "2026-11-19"}
    )
    assert overlong.status_code == 422 and "unknown time zone" in overlong.text
    backwards = await get(collector, path, **{"from": "2026-11-21", "to": "2026-11-20"})
    assert backwards.status_code == 422 and "swap them" in backwards.text
    unknown = await get(
        collector,
        "/api/v1/fsma204/products/00000000000017",
        **{"from": "2026-11-20", "to": "2026-11-20"},
    )
    assert unknown.status_code == 404 and "00000000000017" in unknown.text


async def test_xlsx_is_typed_sortable_and_lists_the_missing_kdes(
    chain: Chain, collector: RunningCollector
) -> None:
    p = chain
    r = await get(
        collector, f"/api/v1/fsma204/lots/01/{p.flour}/10/{p.lot('FLOUR')}/recall", format="xlsx"
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].endswith("spreadsheetml.sheet")
    assert "fsma204-recall-FLOUR" in r.headers["content-disposition"]
    wb = load_workbook(io.BytesIO(r.content))
    ws = wb["FSMA 204"]
    values = [list(row) for row in ws.iter_rows(values_only=True)]
    assert values[0] == HEADER
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == f"A1:AH{len(values)}"
    received = dict(zip(HEADER, values[1], strict=True))
    # Typed cells: the date is a date, the time a time, the quantity a number.
    assert isinstance(received["Event Date (UTC)"], datetime)
    assert received["Event Date (UTC)"].date() == date(2026, 11, 20)
    assert ws.cell(row=2, column=2).number_format == "yyyy-mm-dd"
    assert received["Event Time (UTC)"] == time(6, 0)
    assert received["Quantity"] == 1000 and isinstance(received["Quantity"], int | float)
    assert received["Traceability Lot Code"] == p.lot("FLOUR")
    assert received["Missing KDEs"] is None
    # Same rows as the CSV, cell for cell.
    as_csv = read_csv(
        await get(collector, f"/api/v1/fsma204/lots/01/{p.flour}/10/{p.lot('FLOUR')}/recall")
    )
    assert [row[3] for row in values[1:]] == [row["Traceability Lot Code"] for row in as_csv]
    assert len(values) - 1 == len(as_csv) == 8
    missing = [list(row) for row in wb["Missing KDEs"].iter_rows(values_only=True)]
    assert missing[0] == [
        "Row",
        "Critical Tracking Event",
        "Traceability Lot Code",
        "Event ID",
        "Missing KDE",
        "What Would Supply It",
    ]
    assert missing[1:] == [
        [
            5,
            "Transformation (food used)",
            p.lot("SUGAR"),
            f"{p.edge}-1",
            "Product Description",
            f"no product {p.sugar}: PUT /api/v1/erp/products",
        ],
        [
            8,
            "Shipping",
            p.lot("BREAD"),
            f"{p.edge}-3",
            "Location Description for the Location From Which You Shipped the Food",
            "location 'dock-2' has no phone number: PUT /api/v1/erp/locations",
        ],
        [
            9,
            "Shipping",
            p.lot("BREAD"),
            f"{p.edge}-4",
            "Location Description for the Immediate Subsequent Recipient",
            f"the ERP has not said whom shipment 'SH-2-{p.tag}' went to: PUT /api/v1/erp/shipments",
        ],
        [
            9,
            "Shipping",
            p.lot("BREAD"),
            f"{p.edge}-4",
            "Location Description for the Location From Which You Shipped the Food",
            "location 'dock-2' has no phone number: PUT /api/v1/erp/locations",
        ],
    ]
    about = dict(wb["About"].iter_rows(min_row=2, values_only=True))
    assert f"recall of traceability lot code {p.lot('FLOUR')}" in about["Request"]
    assert "§ 1.1345" in about["Column: Location Description for Where the Food Was Received"]


async def test_unknown_and_ambiguous_lots(services: Services, collector: RunningCollector) -> None:
    p = Chain(services)
    twin = p.lot("TWIN")  # one lot code under two products
    await p.post(
        p.receipt([lot_item(p.flour, twin, 1, "KGM"), lot_item(p.sugar, twin, 1, "KGM")], "PO-X")
    )
    for suffix in ("", "/recall"):
        ambiguous = await get(collector, f"/api/v1/fsma204/lots/{twin}{suffix}")
        assert ambiguous.status_code == 409, ambiguous.text
        detail = ambiguous.json()["detail"]
        assert sorted(c["gtin"] for c in detail["candidates"]) == [p.flour, p.sugar]
        unknown = await get(collector, f"/api/v1/fsma204/lots/NOPE-{p.tag}{suffix}", format="xlsx")
        assert unknown.status_code == 404 and f"NOPE-{p.tag}" in unknown.text
    bad = await get(collector, f"/api/v1/fsma204/lots/{twin}", format="pdf")
    assert bad.status_code == 422


async def test_exports_need_a_reader_and_imports_an_importer(
    chain: Chain, collector: RunningCollector
) -> None:
    p = chain
    path = f"/api/v1/fsma204/lots/01/{p.bread}/10/{p.lot('BREAD')}"
    async with httpx.AsyncClient(base_url=collector.api_url) as anonymous:
        assert (await anonymous.get(path)).status_code == 401
    async with collector.client(Role.importer) as importer:
        assert (await importer.get(path)).status_code == 403
    async with collector.client(Role.reader) as reader:
        r = await reader.put("/api/v1/erp/locations", json=[{"location_id": "x", "name": "x"}])
        assert r.status_code == 403
    async with collector.client(Role.importer) as importer:
        bad = await importer.put(
            "/api/v1/erp/tlc-sources", json=[{"gtin": p.flour, "lot_code": "L1"}]
        )
        assert bad.status_code == 422 and "location_id or a reference" in bad.text


# -- rows from records short of master data (no database: kdes.build on one joined row) --


PLACES = {"dock-2": {"name": "Plant", "address": "5 Oven St", "phone": "+1 555 0100"}}


def joined(**overrides: object) -> dict[str, object]:
    """A row of fsma204/sql.py CTE_ROWS: a shipment of a lot, all master data known."""
    return {
        "kind": kdes.SHIPPING,
        "time": datetime(2026, 11, 20, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
        "event_id": "e-1",
        "lot_id": 1,
        "quantity": 12.5,
        "uom": "KGM",
        "place": "dock-2",
        "source": None,
        "document": None,
        "shipment": "SH-9",
        "new_lots": None,
        "batch": None,
        "gtin": "00614141000012",
        "lot_code": "L1",
        "made_by": None,
        "product": "Flour",
        "order_id": None,
        "customer_id": "C9",
        "ship_to": None,
        "customer": "Shop Inc",
        "customer_address": "1 High St",
        "tlc_location_id": None,
        "tlc_reference": "https://supplier.example/tlc",
        "made_at": None,
        "documents": [["desadv", "SH-9"], ["bol", "BOL-1"]],
        "pack_size": "25 kg",
        "pack_style": "bag",
        "mixed": None,
        "items": 1,
        "unquantified": 0,
        "units": None,
        "first_of_lot": True,
        "supplier_lot": None,
        "batch_edge": None,
        "recipient": None,
        "harvest_end_date": None,
    } | overrides


def test_a_customer_record_never_stands_for_the_recipient() -> None:
    row = kdes.build(joined(), PLACES)
    v = row.values
    # 23:30 at UTC-5 is the next day in UTC: dates are UTC days.
    assert (v[kdes.DATE], v[kdes.TIME]) == (date(2026, 11, 21), time(4, 30))
    assert v[kdes.QUANTITY] == 12.5
    # The customer's (billing) record is not where the food went: named, not filled in.
    assert v[kdes.RECIPIENT] is None
    # A TLC source reference may stand in for the location description.
    assert (v[kdes.TLC_SOURCE], v[kdes.TLC_SOURCE_REFERENCE]) == (
        None,
        "https://supplier.example/tlc",
    )
    assert (v[kdes.DOCUMENT_TYPE], v[kdes.DOCUMENT_NUMBER]) == (
        "Despatch Advice; Bill of Lading",
        "SH-9; BOL-1",
    )
    assert [str(m) for m in row.missing] == [
        f"{kdes.RECIPIENT}: only customer 'C9''s record is known (Shop Inc, 1 High St), not the "
        "place shipment 'SH-9' went to: give the shipment a ship_to (PUT /api/v1/erp/shipments) "
        "and describe it (PUT /api/v1/erp/locations)"
    ]
    # The ship-to place, once the ERP names and describes it, is the recipient.
    shipped_to = kdes.build(joined(ship_to="DC-9"), PLACES | {"DC-9": PLACES["dock-2"]})
    assert shipped_to.values[kdes.RECIPIENT] == "Plant, 5 Oven St, +1 555 0100"
    assert not shipped_to.missing


def test_what_nothing_recorded_is_named_not_invented() -> None:
    row = kdes.build(
        joined(
            lot_code="unit:sscc:006141410000000017",
            gtin="",
            product=None,
            quantity=None,
            uom=None,
            place="dock-9",
            shipment=None,
            customer_id=None,
            customer=None,
            customer_address=None,
            tlc_reference=None,
            documents=None,
        ),
        PLACES,
    )
    assert [(m.kde, m.detail) for m in row.missing] == [
        (kdes.TLC, "a unit no label or event tied to a lot"),
        (kdes.PRODUCT, "lot 'unit:sscc:006141410000000017' names no GTIN"),
        (kdes.QUANTITY, "the event recorded no quantity"),
        (kdes.UOM, "the event recorded no unit of measure"),
        (kdes.RECIPIENT, "the event names no shipment document"),
        (kdes.SHIPPED_FROM, "no location 'dock-9': PUT /api/v1/erp/locations"),
        (
            kdes.TLC_SOURCE,
            "the supplier has not said where lot 'unit:sscc:006141410000000017' got its code: "
            "PUT /api/v1/erp/tlc-sources",
        ),
        (kdes.DOCUMENT_NUMBER, "the event names no business document"),
    ]
    assert row.values[kdes.MISSING] == "; ".join(str(m) for m in row.missing)
    assert all(row.values.get(c) is None for c in (kdes.PRODUCT, kdes.RECIPIENT, kdes.SHIPPED_FROM))


def test_a_receipt_shows_the_suppliers_lot_code_where_ours_differs() -> None:
    receipt = {"kind": kdes.RECEIVING, "shipment": None, "customer_id": None, "customer": None}
    row = kdes.build(joined(**receipt, supplier_lot="M-77"), PLACES)
    assert (row.values[kdes.TLC], row.values[kdes.SUPPLIER_TLC]) == ("L1", "M-77")
    same = kdes.build(joined(**receipt, supplier_lot="L1"), PLACES)
    assert same.values.get(kdes.SUPPLIER_TLC) is None


def test_a_batch_record_is_named_only_where_one_exists() -> None:
    made = {"kind": kdes.FOOD_PRODUCED, "documents": None, "shipment": None, "customer": None}
    ours = kdes.build(joined(**made, batch="B7", batch_edge="edge-line-3"), PLACES)
    assert (ours.values[kdes.DOCUMENT_TYPE], ours.values[kdes.DOCUMENT_NUMBER]) == (
        "Batch Record",
        "B7",
    )
    # A partner's transformation without a transformationID: its event id is no document.
    theirs = kdes.build(joined(**made, batch="e-1", batch_edge="epcis:P1"), PLACES)
    assert theirs.values.get(kdes.DOCUMENT_TYPE) is None
    assert "Reference Document Number: the event names no business document" in str(
        theirs.values[kdes.MISSING]
    )
    named = kdes.build(joined(**made, batch="urn:p1:batch:9", batch_edge="epcis:P1"), PLACES)
    assert named.values[kdes.DOCUMENT_NUMBER] == "urn:p1:batch:9"


def test_the_date_column_names_its_time_zone() -> None:
    assert kdes.header("America/Chicago")[1:3] == [
        "Event Date (America/Chicago)",
        "Event Time (America/Chicago)",
    ]


def test_a_lot_of_ours_takes_its_tlc_source_from_where_it_was_made() -> None:
    made = {"made_by": "B7", "made_at": "line-3", "tlc_reference": None}
    line_3 = {"line-3": {"name": "Plant line 3", "address": "5 Oven St", "phone": "1"}}
    row = kdes.build(joined(**made), PLACES | line_3)
    assert row.values[kdes.TLC_SOURCE] == "Plant line 3, 5 Oven St, 1"
    row = kdes.build(joined(**made | {"made_at": None}), PLACES)
    assert [str(m) for m in row.missing if m.kde == kdes.TLC_SOURCE] == [
        f"{kdes.TLC_SOURCE}: batch 'B7' made it, but its transformation event never arrived"
    ]


# -- initial packing (§ 1.1330): harvested lots received, packed into the first TLC --------
#
# The packhouse:  HARVEST-A (grower's record complete) + HARVEST-B (no record), received on
#                 one PO --P1 at PACK--> PACKED (shipped); HARVEST-C, never received, --P2 at
#                 FLAGPACK (a place flagged initial_packing)--> PACKED2.

FARM = "Green Acres Farm, 10 County Rd, Salinas, CA 93901, USA, +1 831 555 0101"
COOLER = "Valley Cooling, 2 Ice Way, Salinas, CA 93901, USA, +1 831 555 0102"
PACK = "Packhouse line 1, 7 Pack Rd, Salinas, CA 93901, USA, +1 831 555 0103"
PACK_FFRN = "FFRN 98765432109"
CREW = "Valley Harvest Co, +1 831 555 0104"  # business name and phone number only


@pytest.fixture
async def packhouse(services: Services, collector: RunningCollector) -> Chain:
    p = Chain(services)
    t = p.tag
    bins, cases = p.flour, p.bread  # harvested romaine in field bins; packed cases
    a, b, c = (p.lot(n) for n in ("HARVEST-A", "HARVEST-B", "HARVEST-C"))
    receipt = p.receipt(
        [lot_item(bins, a, 2000, "LBR"), lot_item(bins, b, 500, "LBR")], f"PO-{t}"
    ) | {"read_point": f"DOCK-IN-{t}", "biz_location": f"DOCK-IN-{t}"}
    await p.post(
        receipt,
        p.batch(
            f"P1-{t}",
            [lot_item(bins, a, 2000, "LBR"), lot_item(bins, b, 500, "LBR")],
            [lot_item(cases, p.lot("PACKED"), 100, "CA")],
            read_point=f"PACK-{t}",
        ),
        p.batch(
            f"P2-{t}",
            [lot_item(bins, c, 300, "LBR")],
            [lot_item(cases, p.lot("PACKED2"), 12, "CA")],
            read_point=f"FLAGPACK-{t}",
        ),
        p.shipment([lot_item(cases, p.lot("PACKED"), 100, "CA")], f"SH-{t}")
        | {"read_point": f"DOCK-OUT-{t}", "biz_location": f"DOCK-OUT-{t}"},
    )
    place = {"address": "7 Pack Rd, Salinas, CA 93901, USA", "phone": "+1 831 555 0103"}
    imports = {
        "/api/v1/erp/products": [
            {
                "gtin": bins,
                "name": "Romaine lettuce",
                "pack_size": "1,000 lb",
                "pack_style": "field bin",
            },
            {
                "gtin": cases,
                "name": "Romaine hearts 3 ct",
                "pack_size": "12 x 3 ct",
                "pack_style": "case",
            },
        ],
        "/api/v1/erp/purchase-orders": [{"po": f"PO-{t}", "supplier": f"FARM-{t}"}],
        "/api/v1/erp/locations": [
            {
                "location_id": f"FARM-{t}",
                "name": "Green Acres Farm",
                "address": "10 County Rd, Salinas, CA 93901, USA",
                "phone": "+1 831 555 0101",
            },
            {"location_id": f"CREW-{t}", "name": "Valley Harvest Co", "phone": "+1 831 555 0104"},
            {
                "location_id": f"COOLER-{t}",
                "name": "Valley Cooling",
                "address": "2 Ice Way, Salinas, CA 93901, USA",
                "phone": "+1 831 555 0102",
            },
            {"location_id": f"DOCK-IN-{t}", "name": "Packhouse dock", **place},
            {"location_id": f"DOCK-OUT-{t}", "name": "Packhouse dock", **place},
            {
                "location_id": f"PACK-{t}",
                "name": "Packhouse line 1",
                **place,
                "tlc_source_reference": PACK_FFRN,
            },
            {
                "location_id": f"FLAGPACK-{t}",
                "name": "Packhouse line 2",
                **place,
                "initial_packing": True,
            },
        ],
        "/api/v1/erp/harvests": [
            {
                "gtin": bins,
                "lot_code": a,
                "commodity": "Romaine lettuce",
                "variety": "Green Forest",
                "farm": f"FARM-{t}",
                "growing_area": "Field 7",
                "harvester": f"CREW-{t}",
                "harvest_date": "2026-11-19",
                "cooling_location": f"COOLER-{t}",
                "cooling_date": "2026-11-19",
            }
        ],
    }
    async with collector.client(Role.importer) as api:
        for path, rows in imports.items():
            r = await api.put(path, json=rows)
            assert r.status_code == 200, (path, r.text)
    return p


def packed(p: Chain) -> dict[str, dict[str, str]]:
    t, blank = p.tag, dict.fromkeys(HEADER, "")
    packing = blank | {
        "Critical Tracking Event": "Initial Packing",
        "Event Date (UTC)": "2026-11-20",
        "Product Description": "Romaine hearts 3 ct, 12 x 3 ct case",
        "Unit of Measure": "CA",
        "GTIN": p.bread,
        "Reference Document Type": "Batch Record",
    }
    on_pack_1 = {
        "Event Time (UTC)": "06:01:00",
        "Event ID": f"{p.edge}-1",
        "Traceability Lot Code": p.lot("PACKED"),
        "Quantity": "100",
        "Location Description for the Traceability Lot Code Source": PACK,
        "Traceability Lot Code Source Reference": PACK_FFRN,
        "Reference Document Number": f"P1-{t}",
    }
    received = {
        "Date You Received the Food": "2026-11-20",
        "Unit of Measure of the Food Received": "LBR",
    }

    def no_record(lot: str) -> str:
        why = f"no harvest record of lot '{p.lot(lot)}': PUT /api/v1/erp/harvests"
        return "; ".join(
            [
                f"Commodity: {why}",
                f"Location Description for the Farm Where the Food Was Harvested: {why}",
                f"Name of the Field, Growing Area or Container: {why}",
                f"Business Name and Phone Number for the Harvester: {why}",
                f"Date of Harvesting: {why}",
                f"Location Description for Where the Food Was Cooled: {why} (if it was cooled "
                "before packing)",
            ]
        )

    return {
        "A packed": packing
        | on_pack_1
        | received
        | {
            "Commodity": "Romaine lettuce",
            "Variety": "Green Forest",
            "Quantity of the Food Received": "2000",
            "Location Description for the Farm Where the Food Was Harvested": FARM,
            "Name of the Field, Growing Area or Container": "Field 7",
            "Business Name and Phone Number for the Harvester": CREW,
            "Date of Harvesting": "2026-11-19",
            "Location Description for Where the Food Was Cooled": COOLER,
            "Date of Cooling": "2026-11-19",
            "Lot Code of the Food Received": p.lot("HARVEST-A"),
        },
        # The 100 cases packed are on A's row only: a sum over the rows counts them once.
        "B packed": packing
        | on_pack_1
        | received
        | {
            "Quantity": "",
            "Unit of Measure": "",
            "Quantity of the Food Received": "500",
            "Lot Code of the Food Received": p.lot("HARVEST-B"),
            "Missing KDEs": no_record("HARVEST-B"),
        },
        "C packed at the flagged line": packing
        | {
            "Event Time (UTC)": "06:02:00",
            "Event ID": f"{p.edge}-2",
            "Traceability Lot Code": p.lot("PACKED2"),
            "Quantity": "12",
            "Location Description for the Traceability Lot Code Source": "Packhouse line 2, "
            "7 Pack Rd, Salinas, CA 93901, USA, +1 831 555 0103",
            "Reference Document Number": f"P2-{t}",
            "Lot Code of the Food Received": p.lot("HARVEST-C"),
            "Missing KDEs": "; ".join(
                f"{c}: no receipt of lot '{p.lot('HARVEST-C')}' was recorded"
                for c in (
                    "Date You Received the Food",
                    "Quantity of the Food Received",
                    "Unit of Measure of the Food Received",
                )
            )
            + "; "
            + no_record("HARVEST-C"),
        },
        "packed shipped": blank
        | {
            "Critical Tracking Event": "Shipping",
            "Event Date (UTC)": "2026-11-20",
            "Event Time (UTC)": "06:03:00",
            "Traceability Lot Code": p.lot("PACKED"),
            "Product Description": "Romaine hearts 3 ct, 12 x 3 ct case",
            "Quantity": "100",
            "Unit of Measure": "CA",
            "Location Description for the Location From Which You Shipped the Food": "Packhouse "
            "dock, 7 Pack Rd, Salinas, CA 93901, USA, +1 831 555 0103",
            "Location Description for the Traceability Lot Code Source": PACK,
            "Traceability Lot Code Source Reference": PACK_FFRN,
            "Reference Document Type": "Despatch Advice",
            "Reference Document Number": f"SH-{t}",
            "GTIN": p.bread,
            "Event ID": f"{p.edge}-3",
            "Missing KDEs": "Location Description for the Immediate Subsequent Recipient: the "
            f"ERP has not said whom shipment 'SH-{t}' went to: PUT /api/v1/erp/shipments",
        },
    }


async def test_initial_packing_of_harvested_lots(
    packhouse: Chain, collector: RunningCollector
) -> None:
    p, want = packhouse, packed(packhouse)
    lot = f"/api/v1/fsma204/lots/01/{p.bread}/10/{p.lot('PACKED')}"
    # A row per lot packed per lot harvested (by the harvested lot's code), then its shipment
    # whose TLC source is where it was packed.
    assert read_csv(await get(collector, lot)) == [
        want["A packed"],
        want["B packed"],
        want["packed shipped"],
    ]
    # From the harvested lot: its receipt is no receiving CTE (§ 1.1345(c)), its date and
    # quantity are on the packing row.
    harvest = f"/api/v1/fsma204/lots/01/{p.flour}/10/{p.lot('HARVEST-A')}"
    assert read_csv(await get(collector, harvest)) == [want["A packed"], want["B packed"]]
    assert read_csv(await get(collector, f"{harvest}/recall")) == [
        want["A packed"],
        want["B packed"],
        want["packed shipped"],
    ]
    # A place flagged initial_packing makes its batches initial packing, grower data or not.
    flagged = f"/api/v1/fsma204/lots/01/{p.bread}/10/{p.lot('PACKED2')}"
    assert read_csv(await get(collector, flagged)) == [want["C packed at the flagged line"]]
    # A lot with no harvest record may have been packed before: its receipt keeps its row.
    unrecorded = read_csv(
        await get(collector, f"/api/v1/fsma204/lots/01/{p.flour}/10/{p.lot('HARVEST-B')}")
    )
    assert [(r["Critical Tracking Event"], r["Traceability Lot Code"]) for r in unrecorded] == [
        ("Receiving", p.lot("HARVEST-B")),
        ("Initial Packing", p.lot("PACKED")),
        ("Initial Packing", p.lot("PACKED")),
    ]
    assert unrecorded[0]["Quantity"] == "500" and unrecorded[0]["Unit of Measure"] == "LBR"


async def test_initial_packing_xlsx_has_dates_as_dates(
    packhouse: Chain, collector: RunningCollector
) -> None:
    p = packhouse
    r = await get(
        collector, f"/api/v1/fsma204/lots/01/{p.bread}/10/{p.lot('PACKED')}", format="xlsx"
    )
    assert r.status_code == 200, r.text
    rows = list(load_workbook(io.BytesIO(r.content))["FSMA 204"].iter_rows(values_only=True))
    first = dict(zip(HEADER, rows[1], strict=True))
    assert first["Critical Tracking Event"] == "Initial Packing"
    assert first["Date of Harvesting"] == datetime(2026, 11, 19)
    assert first["Date You Received the Food"] == datetime(2026, 11, 20)
    assert first["Quantity of the Food Received"] == 2000


async def test_harvest_imports_are_checked(collector: RunningCollector) -> None:
    async with collector.client(Role.reader) as reader:
        r = await reader.put("/api/v1/erp/harvests", json=[])
        assert r.status_code == 403
    async with collector.client(Role.importer) as importer:
        for bad in (
            {"lot_code": "L1"},  # no commodity
            {"lot_code": "L1", "commodity": "Romaine", "gtin": "123"},
            {"lot_code": "L1", "commodity": "Romaine", "harvest_date": "yesterday"},
            {"lot_code": "L1", "commodity": "Romaine", "field": "7"},  # not a KDE of ours
        ):
            r = await importer.put("/api/v1/erp/harvests", json=[bad])
            assert r.status_code == 422, (bad, r.text)


def test_a_harvest_record_short_of_kdes_names_each() -> None:
    """A partial grower record: the farm unknown as a place, no field, a harvester with no
    phone number, a cooler with no date."""
    row = kdes.build(
        joined(
            kind=kdes.INITIAL_PACKING,
            shipment=None,
            customer_id=None,
            customer=None,
            customer_address=None,
            tlc_reference=None,
            place="pack-1",
            batch="P9",
            batch_edge="edge-9",  # a batch of our own lines: its batch record is here
            documents=None,
            used_lot_code="H9",
            commodity="Cantaloupe",
            variety=None,
            farm="farm-9",
            growing_area=None,
            harvester="crew-9",
            harvest_date=date(2026, 11, 18),
            cooling_location="cooler-9",
            cooling_date=None,
            received=datetime(2026, 11, 19, 23, 0, tzinfo=UTC),
            quantity_received=40,
            uom_received="bins",
        ),
        PLACES
        | {
            "pack-1": {"name": "Pack", "address": "1 Rd", "phone": "1"},
            "crew-9": {"name": "Crew Co"},
            "cooler-9": {"name": "Cooler", "address": "2 Rd", "phone": "2"},
        },
        ZoneInfo("America/Los_Angeles"),
    )
    v = row.values
    assert (v[kdes.CTE], v[kdes.COMMODITY], v[kdes.VARIETY]) == (
        "Initial Packing",
        "Cantaloupe",
        None,
    )
    # Received at 23:00 UTC: the 19th in UTC, the 19th in Los Angeles (15:00).
    assert (v[kdes.DATE_RECEIVED], v[kdes.QUANTITY_RECEIVED]) == (date(2026, 11, 19), 40)
    assert (v[kdes.HARVESTER], v[kdes.COOLED_AT]) == ("Crew Co", "Cooler, 2 Rd, 2")
    assert (v[kdes.TLC_SOURCE], v[kdes.DOCUMENT_NUMBER]) == ("Pack, 1 Rd, 1", "P9")
    assert [(m.kde, m.detail) for m in row.missing] == [
        (kdes.FARM, "no location 'farm-9': PUT /api/v1/erp/locations"),
        (
            kdes.GROWING_AREA,
            "the harvest record of lot 'H9' names no field, growing area or container "
            "(required for produce and aquacultured food): PUT /api/v1/erp/harvests",
        ),
        (kdes.HARVESTER, "location 'crew-9' has no phone number: PUT /api/v1/erp/locations"),
        (
            kdes.COOLING_DATE,
            "the harvest record of lot 'H9' says where the food was cooled, not when: "
            "PUT /api/v1/erp/harvests",
        ),
    ]
    # Not cooled before packing: no cooling KDE is missing.
    uncooled = kdes.build(
        joined(
            kind=kdes.INITIAL_PACKING,
            tlc_reference="FFRN 1",
            used_lot_code="H9",
            commodity="Cantaloupe",
            variety=None,
            farm="dock-2",
            growing_area="Block 3",
            harvester="dock-2",
            harvest_date=date(2026, 11, 18),
            cooling_location=None,
            cooling_date=None,
            received=datetime(2026, 11, 19, 23, 0, tzinfo=UTC),
            quantity_received=40,
            uom_received="bins",
        ),
        PLACES,
    )
    assert uncooled.missing == []


async def test_a_food_with_a_supplier_tlc_is_used_not_packed_at_a_packing_line(
    packhouse: Chain, collector: RunningCollector
) -> None:
    """A pre-packed dressing (its supplier's traceability lot code on record) added at the
    flagged packing line is a food used in a transformation; the harvested lot beside it is
    what the initial packing packs."""
    p, t = packhouse, packhouse.tag
    dressing, harvest = p.lot("DRESSING"), p.lot("HARVEST-D")
    await p.post(
        p.batch(
            f"P3-{t}",
            [lot_item(p.flour, harvest, 100, "LBR"), lot_item(p.sugar, dressing, 5, "KGM")],
            [lot_item(p.bread, p.lot("KIT"), 10, "CA")],
            read_point=f"FLAGPACK-{t}",
        )
    )
    async with collector.client(Role.importer) as api:
        r = await api.put(
            "/api/v1/erp/tlc-sources",
            json=[{"gtin": p.sugar, "lot_code": dressing, "reference": "FFRN 11112222333"}],
        )
        assert r.status_code == 200, r.text
    rows = read_csv(await get(collector, f"/api/v1/fsma204/lots/01/{p.bread}/10/{p.lot('KIT')}"))
    kinds = sorted((row["Critical Tracking Event"], row["Traceability Lot Code"]) for row in rows)
    assert kinds == [
        ("Initial Packing", p.lot("KIT")),
        ("Transformation (food used)", dressing),
    ]


# -- the CTEs the rule words by who the other party is ------------------------------------
#
# The fish market: COD landed from a fishing vessel (§ 1.1335); HONEY bought from a small
# farm the rule does not apply to (§ 1.1345(b)); ROMAINE from a grower, cooled in our own
# cooler before we pack it (§ 1.1325(b)).


async def test_first_land_based_receiving_uncovered_suppliers_and_our_cooling(
    services: Services, collector: RunningCollector
) -> None:
    p = Chain(services)
    t = p.tag
    cod, honey, romaine = p.lot("COD"), p.lot("HONEY"), p.lot("ROMAINE")
    dock = {"read_point": f"DOCK-{t}", "biz_location": f"DOCK-{t}"}
    await p.post(
        p.receipt([lot_item(p.flour, cod, 800, "KGM")], f"PO-V-{t}") | dock,
        p.receipt([lot_item(p.sugar, honey, 40, "KGM")], f"PO-H-{t}") | dock,
        p.receipt([lot_item(p.dough, romaine, 2000, "LBR")], f"PO-R-{t}") | dock,
        p.batch(
            f"P-{t}",
            [lot_item(p.dough, romaine, 2000, "LBR")],
            [lot_item(p.bread, p.lot("PACKED"), 100, "CA")],
            read_point=f"PACK-{t}",
        ),
    )
    place = {"address": "1 Wharf Rd, Gloucester, MA 01930, USA", "phone": "+1 978 555 0100"}
    imports = {
        "/api/v1/erp/products": [
            {"gtin": p.flour, "name": "Atlantic cod, whole, ungraded", "pack_size": "800 kg",
             "pack_style": "fish tote"},
            {"gtin": p.sugar, "name": "Raw honey", "pack_size": "20 kg", "pack_style": "pail"},
            {"gtin": p.dough, "name": "Romaine lettuce, field bin"},
        ],
        "/api/v1/erp/purchase-orders": [
            {"po": f"PO-V-{t}", "supplier": f"VESSEL-{t}"},
            {"po": f"PO-H-{t}", "supplier": f"SMALLFARM-{t}"},
            {"po": f"PO-R-{t}", "supplier": f"GROWER-{t}"},
        ],
        "/api/v1/erp/locations": [
            {"location_id": f"VESSEL-{t}", "name": "FV Northern Star", "fishing_vessel": True},
            {"location_id": f"SMALLFARM-{t}", "name": "Bee Farm", **place,
             "covered_by_rule": False},
            {"location_id": f"GROWER-{t}", "name": "Green Acres Farm", **place},
            {"location_id": f"DOCK-{t}", "name": "Harbour Foods dock", **place,
             "tlc_source_reference": "FFRN 11111111111"},
            {"location_id": f"COOLER-{t}", "name": "Harbour Foods cooler", **place,
             "our_site": True},
            {"location_id": f"PACK-{t}", "name": "Harbour Foods packing", **place,
             "initial_packing": True},
        ],
        "/api/v1/erp/harvests": [
            {"gtin": p.flour, "lot_code": cod, "commodity": "Atlantic cod (Gadus morhua)",
             "growing_area": "NMFS area 514", "harvest_date": "2026-11-16",
             "harvest_end_date": "2026-11-19"},
            {"gtin": p.dough, "lot_code": romaine, "commodity": "Romaine lettuce",
             "farm": f"GROWER-{t}", "harvest_date": "2026-11-19",
             "cooling_location": f"COOLER-{t}", "cooling_date": "2026-11-19"},
        ],
    }  # fmt: skip
    async with collector.client(Role.importer) as api:
        for path, body in imports.items():
            r = await api.put(path, json=body)
            assert r.status_code == 200, (path, r.text)
    dock_description = "Harbour Foods dock, 1 Wharf Rd, Gloucester, MA 01930, USA, +1 978 555 0100"

    [landed] = read_csv(await get(collector, f"/api/v1/fsma204/lots/01/{p.flour}/10/{cod}"))
    assert {k: v for k, v in landed.items() if v} == {
        "Critical Tracking Event": "First Land-Based Receiving",
        "Event Date (UTC)": "2026-11-20",
        "Event Time (UTC)": "06:00:00",
        "Traceability Lot Code": cod,
        "Product Description": "Atlantic cod, whole, ungraded, 800 kg fish tote",
        "Quantity": "800",
        "Unit of Measure": "KGM",
        "Location Description for the Immediate Previous Source": "FV Northern Star",
        "Location Description for Where the Food Was Received": dock_description,
        "Location Description for the Traceability Lot Code Source": dock_description,
        "Traceability Lot Code Source Reference": "FFRN 11111111111",
        "Reference Document Type": "Purchase Order",
        "Reference Document Number": f"PO-V-{t}",
        "Commodity": "Atlantic cod (Gadus morhua)",
        "Harvest Date Range and Locations for the Trip": "2026-11-16 to 2026-11-19, NMFS area 514",
        "GTIN": p.flour,
        "Event ID": f"{p.edge}-0",
    }

    [bought] = read_csv(await get(collector, f"/api/v1/fsma204/lots/01/{p.sugar}/10/{honey}"))
    assert bought["Critical Tracking Event"] == (
        "Receiving (from a person the rule does not apply to)"
    )
    # We assigned its code: its source is where we received it, not the farm's word.
    assert bought["Location Description for the Traceability Lot Code Source"] == (dock_description)
    assert bought["Missing KDEs"] == ""

    rows = read_csv(await get(collector, f"/api/v1/fsma204/lots/01/{p.dough}/10/{romaine}"))
    cooled = [r for r in rows if r["Critical Tracking Event"] == "Cooling (before initial packing)"]
    assert [
        (r["Event Date (UTC)"], r["Event Time (UTC)"], r["Commodity"], r["Quantity"],
         r["Unit of Measure"], r["Location Description for Where the Food Was Cooled"],
         r["Location Description for the Farm Where the Food Was Harvested"],
         r["Location Description for the Immediate Subsequent Recipient"], r["Date of Cooling"])
        for r in cooled
    ] == [
        ("2026-11-19", "", "Romaine lettuce", "2000", "LBR",
         "Harbour Foods cooler, 1 Wharf Rd, Gloucester, MA 01930, USA, +1 978 555 0100",
         "Green Acres Farm, 1 Wharf Rd, Gloucester, MA 01930, USA, +1 978 555 0100",
         "Harbour Foods packing, 1 Wharf Rd, Gloucester, MA 01930, USA, +1 978 555 0100",
         "2026-11-19")
    ]  # fmt: skip
    assert cooled[0]["Missing KDEs"] == (
        "Reference Document Number: the event names no business document"
    )


def test_a_product_description_names_its_pack_or_says_it_is_missing() -> None:
    packed = kdes.build(joined(ship_to="dock-2"), PLACES)
    assert packed.values[kdes.PRODUCT] == "Flour, 25 kg bag"
    assert not packed.missing
    bare = kdes.build(joined(ship_to="dock-2", pack_size=None, pack_style=None), PLACES)
    assert bare.values[kdes.PRODUCT] == "Flour"
    assert [str(m) for m in bare.missing] == [
        f"{kdes.PRODUCT}: product 00614141000012 has no pack size or pack style (part of the "
        "product description): PUT /api/v1/erp/products"
    ]
