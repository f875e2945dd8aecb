"""HTTP: the FSMA 204 spreadsheets (by traceability lot code, by product and date range, by
recall of a lot or by process condition), role reader. The ERP imports of the master data
they need (locations, TLC sources, the grower's harvest records) are with the other
imports, in cloud_collector/routes/erp.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection

from cloud_collector import trace
from cloud_collector.endpoints import (
    READ,
    Conn,
    app_pool,
    app_settings,
    attachment,
    export_statements,
    resolve_lot,
)
from cloud_collector.fsma204 import export, render
from cloud_collector.fsma204.kdes import day_range, header
from cloud_collector.routes.trace import ConditionAsked
from protocols.time_zones import zone_named

Format = Literal["csv", "xlsx"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SCOPE = (
    "21 CFR 1.1455(c)(3)(ii) electronic sortable spreadsheet: the Key Data Elements of "
    "receiving (§ 1.1345), shipping (§ 1.1340), transformation (§ 1.1350) and initial "
    "packing of a raw agricultural commodity (§ 1.1330: batches of harvested lots, or at a "
    "place flagged as packing); one row per event per lot line, sorted by event date and "
    "time, then traceability lot code."
)

router = APIRouter(tags=["FSMA 204"], dependencies=READ)


def _zone(
    tz: Annotated[
        str, Query(description="IANA time zone of the dates and times, e.g. America/Chicago")
    ] = "UTC",
) -> ZoneInfo:
    """The time zone of the spreadsheet's dates: "the date you received the food" is the
    plant's date, which UTC may put a day off."""
    zone = zone_named(tz)
    if zone is None:
        raise HTTPException(
            422, f"unknown time zone {tz!r}: give an IANA name such as America/Chicago or UTC"
        )
    return zone


Zone = Annotated[ZoneInfo, Depends(_zone)]


def _filename(*parts: str) -> str:
    return "-".join(["fsma204", *parts])


async def _spreadsheet(
    request: Request,
    conn: AsyncConnection,
    lot_ids: list[int],
    format: Format,
    name: str,
    request_text: str,
    zone: ZoneInfo,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Response:
    columns = header(zone.key)
    timeout_s = app_settings(request).api_export_statement_timeout_s
    if format == "xlsx":
        about = [
            ("Request", request_text),
            ("Generated (UTC)", datetime.now(UTC).isoformat(timespec="seconds")),
            ("Dates and times", f"in time zone {zone.key}"),
            ("What it holds", SCOPE),
        ]
        async with export_statements(conn, timeout_s):
            body = await render.xlsx(export.rows(conn, lot_ids, start, end, zone), columns, about)
        return Response(
            body,
            media_type=XLSX,
            headers={"Content-Disposition": attachment(f"{name}.xlsx")},
        )
    pool = app_pool(request)

    async def lines() -> AsyncIterator[str]:
        # Its own connection: the request's is given back before a stream ends.
        async with (
            pool.connection() as stream_conn,
            export_statements(stream_conn, timeout_s),
        ):
            rows = export.rows(stream_conn, lot_ids, start, end, zone)
            async for line in render.csv_lines(rows, columns):
                yield line

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": attachment(f"{name}.csv")},
    )


def _lot_text(lot: trace.Lot) -> str:
    gtin = f"GTIN {lot.gtin}, " if lot.gtin else ""
    return f"traceability lot code {lot.lot_code} ({gtin}lot id {lot.lot_id})"


# Registered before the plain lot route: {lot:path} would swallow "/recall".
@router.get("/api/v1/fsma204/lots/{lot:path}/recall", response_model=None)
async def recall_spreadsheet(
    lot: str, request: Request, conn: Conn, zone: Zone, format: Format = "csv"
) -> Response:
    """The sortable spreadsheet of a whole recall: every CTE of every lot the given lot
    reached (its forward trace), and of the transformations that used or made them."""
    target = await resolve_lot(conn, lot)
    ids = await export.recall_lots(conn, target)
    text = f"recall of {_lot_text(target)}: {len(ids)} lots of its forward trace"
    name = _filename("recall", target.lot_code)
    return await _spreadsheet(request, conn, ids, format, name, text, zone)


@router.get("/api/v1/fsma204/recall/by-condition", response_model=None)
async def condition_spreadsheet(
    asked: ConditionAsked, request: Request, conn: Conn, zone: Zone, format: Format = "csv"
) -> Response:
    """The sortable spreadsheet of a recall by condition (the query GET
    /api/v1/recall/by-condition takes): every CTE of every lot the batches that ran while
    the condition held made, and of every lot downstream of them."""
    roots = await trace.condition_roots(conn, asked)
    ids = await trace.reachable(conn, roots, "forward")
    text = (
        f"recall by condition ({asked.described()}): {len(ids)} lots made by the batches "
        "that ran while it held and downstream of them"
    )
    name = _filename("recall", asked.tag, asked.condition, f"{asked.start:%Y%m%dT%H%M}")
    return await _spreadsheet(request, conn, ids, format, name, text, zone)


@router.get("/api/v1/fsma204/lots/{lot:path}", response_model=None)
async def lot_spreadsheet(
    lot: str, request: Request, conn: Conn, zone: Zone, format: Format = "csv"
) -> Response:
    """The sortable spreadsheet of one traceability lot code: its receiving, shipping and
    transformation events. `{lot}` takes what the trace endpoints take (GTIN + lot as an
    EPC class, Digital Link or element string, a unit's EPC or SSCC, a lot code)."""
    target = await resolve_lot(conn, lot)
    name = _filename(target.lot_code)
    return await _spreadsheet(request, conn, [target.lot_id], format, name, _lot_text(target), zone)


@router.get("/api/v1/fsma204/products/{gtin}", response_model=None)
async def product_spreadsheet(
    gtin: Annotated[str, Path(pattern=r"^\d{14}$")],
    request: Request,
    conn: Conn,
    zone: Zone,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
    format: Format = "csv",
) -> Response:
    """The sortable spreadsheet of a product (GTIN-14) over a date range: every CTE of its
    lots from `from` to `to`, both whole days included (in time zone `tz`)."""
    if end < start:
        raise HTTPException(422, f"'to' ({end}) is before 'from' ({start}): swap them")
    ids = await export.product_lots(conn, gtin)
    if not ids:
        raise HTTPException(
            404, f"no lot of GTIN {gtin} is known: check the GTIN (14 digits, with check digit)"
        )
    text = f"product GTIN {gtin} from {start} to {end} (days in {zone.key}, both included)"
    begin, finish = day_range(start, end, zone)
    name = _filename(gtin, str(start), str(end))
    return await _spreadsheet(request, conn, ids, format, name, text, zone, begin, finish)
