"""The ERP imports (role importer): each a list of rows, all stored or none (422 names the
row the database refused). The models and their SQL are in cloud_collector/erp.py."""

from __future__ import annotations

from fastapi import APIRouter

from cloud_collector import erp
from cloud_collector.endpoints import IMPORT, Conn, import_rows

router = APIRouter(prefix="/api/v1", dependencies=IMPORT)


@router.put("/erp/products")
async def import_products(rows: list[erp.Product], conn: Conn) -> dict[str, int]:
    return await import_rows(conn, erp.products, rows)


@router.put("/erp/customers")
async def import_customers(rows: list[erp.Customer], conn: Conn) -> dict[str, int]:
    return await import_rows(conn, erp.customers, rows)


@router.put("/erp/shipments")
async def import_shipments(rows: list[erp.Shipment], conn: Conn) -> dict[str, int]:
    """Which order and customer each shipment document belongs to."""
    return await import_rows(conn, erp.shipments, rows)


@router.put("/erp/purchase-orders")
async def import_purchase_orders(rows: list[erp.PurchaseOrder], conn: Conn) -> dict[str, int]:
    """Which supplier delivered each purchase order, and the supplier's own lot codes."""
    return await import_rows(conn, erp.purchase_orders, rows)


@router.post("/qc-results", status_code=201)
async def import_qc_results(rows: list[erp.QcResult], conn: Conn) -> dict[str, int]:
    """In-process (IPQC), final (FQC) and incoming checks, per batch or per lot."""
    return await import_rows(conn, erp.qc_results, rows)


# What FSMA 204's spreadsheets need beyond the trace (places, TLC sources, harvests): listed
# in the API's documentation with the FSMA 204 exports, where their reader looks for them.
@router.put("/erp/locations", tags=["FSMA 204"])
async def import_locations(rows: list[erp.Location], conn: Conn) -> dict[str, int]:
    """What each place is (business name, address, phone, GLN), by the id events and
    documents give it: read points, suppliers as purchase orders name them, ship-tos."""
    return await import_rows(conn, erp.locations, rows)


@router.put("/erp/tlc-sources", tags=["FSMA 204"])
async def import_tlc_sources(rows: list[erp.TlcSource], conn: Conn) -> dict[str, int]:
    """Where a supplier's lot got its traceability lot code (a location, a reference)."""
    return await import_rows(conn, erp.tlc_sources, rows)


@router.put("/erp/harvests", tags=["FSMA 204"])
async def import_harvests(rows: list[erp.Harvest], conn: Conn) -> dict[str, int]:
    """What the grower said of each harvested lot we initially pack (21 CFR 1.1330(a)):
    commodity and variety, farm, field or growing area, harvester, date of harvesting, where
    and when it was cooled. A batch using such a lot is an initial packing."""
    return await import_rows(conn, erp.harvests, rows)
