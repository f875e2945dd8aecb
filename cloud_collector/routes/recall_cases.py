"""Recall cases and mock-recall drills over HTTP (cloud_collector/recall_cases): role quality
to open, recompute, record on and close a case; roles reader and quality to look and export.

Looking at a case reads it as last recomputed (`checked_at`; the collector recomputes open
cases every TRACE_RECALL_CASES_REFRESH_S, `POST .../refresh` at once): a recall reaching
ten thousand lots takes seconds to recompute, too long for every read. The export
recomputes first and records who took it (a drill's time), so it runs on the primary."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, TypeVar

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from psycopg import AsyncConnection

from cloud_collector import recall_cases, trace
from cloud_collector.auth import Principal, Role, require
from cloud_collector.endpoints import (
    Conn,
    Settings,
    attachment,
    export_statements,
    primary_connection,
    resolve_lot,
)
from cloud_collector.fsma204.routes import XLSX, Zone
from cloud_collector.routes.trace import ConditionWindow, check_window

router = APIRouter(prefix="/api/v1/recall-cases", tags=["recall cases"])

CHANGE = [Depends(require(Role.quality))]
LOOK = [Depends(require(Role.reader, Role.quality))]
Limit = Annotated[int, Query(ge=1, le=10_000)]
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Primary = Annotated[AsyncConnection, Depends(primary_connection)]
T = TypeVar("T")


class OpenCaseRequest(recall_cases.OpenCase):
    """`lot` (what the trace endpoints take) or `condition` (what POST
    /api/v1/recall/by-condition takes, times with their UTC offset)."""

    condition: ConditionWindow | None = None


def _who(request: Request) -> str:
    principal: Principal = request.state.principal
    return principal.name


async def _answer(call: Callable[[], Awaitable[T]]) -> T:
    """The case module's refusals as HTTP: 404 no such case, 409 closed, 422 not of it."""
    try:
        return await call()
    except recall_cases.UnknownCase as err:
        raise HTTPException(404, str(err)) from err
    except recall_cases.CaseClosed as err:
        raise HTTPException(409, str(err)) from err
    except recall_cases.NotOfCase as err:
        raise HTTPException(422, str(err)) from err


async def _current(conn: AsyncConnection, case_id: int) -> recall_cases.CaseRecord:
    """The case after recomputing its set; if the recomputation fails (a statement timeout
    on a huge set), the case as last found, saying so: a case's record is always readable."""
    failed = None
    try:
        await _answer(lambda: recall_cases.refresh(conn, case_id))
    except psycopg.OperationalError:
        raise
    except psycopg.Error as err:
        failed = f"{type(err).__name__}: {err}"
    record = await _answer(lambda: recall_cases.case_record(conn, case_id))
    if failed is not None:
        record.gaps.insert(
            0,
            f"the affected set could not be recomputed now ({failed}): it is as found at "
            f"{record.case.checked_at.isoformat()}",
        )
    return record


async def _lot(conn: AsyncConnection, text: str | None) -> trace.Lot | None:
    return None if text is None else await resolve_lot(conn, text)


@router.post("", status_code=201, dependencies=CHANGE)
async def open_case(
    body: OpenCaseRequest, request: Request, conn: Conn, settings: Settings
) -> recall_cases.CaseRecord:
    """Open a case from a lot or a condition (`drill: true` for a mock recall): the set the
    recall gives now is frozen as the case's, and kept current from then on."""
    if body.condition is not None:
        check_window(body.condition, settings)
    lot = await _lot(conn, body.lot)
    case_id = await recall_cases.open_case(
        conn, body.title, _who(request), lot, body.condition, body.drill
    )
    return await recall_cases.case_record(conn, case_id)


@router.get("", dependencies=LOOK)
async def list_cases(
    conn: Conn,
    state: recall_cases.CaseState = "all",
    drill: bool | None = None,
    limit: Limit = 1000,
) -> list[recall_cases.Case]:
    """Cases, newest first: open, closed or all; `drill=true` only drills, `false` none."""
    return await recall_cases.cases(conn, state, drill, limit)


@router.get("/drills", dependencies=LOOK)
async def list_drills(conn: Conn, limit: Limit = 1000) -> list[recall_cases.Case]:
    """Mock-recall drills, newest first, each with the time from its opening to its first
    complete export (`time_to_export_s`, `within_24h`; null until it was exported)."""
    return await recall_cases.cases(conn, "all", True, limit)


@router.get("/{case_id}", dependencies=LOOK)
async def show_case(case_id: CaseId, conn: Conn) -> recall_cases.CaseRecord:
    """The case as last recomputed (`checked_at`): its members (what was found since its
    opening listed with when), per customer and per place, the gaps, every action."""
    return await _answer(lambda: recall_cases.case_record(conn, case_id))


@router.post("/{case_id}/refresh", dependencies=CHANGE)
async def refresh_case(case_id: CaseId, conn: Conn) -> recall_cases.CaseRecord:
    """Recompute an open case's set now (a closed case stays as it was closed): members
    found since are added with when, members no longer found are kept and marked."""
    return await _current(conn, case_id)


@router.post("/{case_id}/notices", status_code=201, dependencies=CHANGE)
async def notify(
    case_id: CaseId, body: recall_cases.Notice, request: Request, conn: Conn
) -> recall_cases.CaseRecord:
    """Record that a customer of the case was told: when, by whom, how."""
    await _answer(
        lambda: recall_cases.record(
            conn,
            case_id,
            "notified",
            _who(request),
            customer_key=body.customer,
            happened_at=body.notified_at,
            method=body.method,
            contact=body.contact,
            note=body.note,
            detail={"notified_by": body.notified_by},
        )
    )
    return await _answer(lambda: recall_cases.case_record(conn, case_id))


@router.post("/{case_id}/returns", status_code=201, dependencies=CHANGE)
async def returned(
    case_id: CaseId, body: recall_cases.Return, request: Request, conn: Conn
) -> recall_cases.CaseRecord:
    """Record what a customer of the case sent back (of one of its lots, if known)."""
    lot = await _lot(conn, body.lot)
    await _answer(
        lambda: recall_cases.record(
            conn,
            case_id,
            "returned",
            _who(request),
            customer_key=body.customer,
            lot=lot,
            happened_at=body.received_at,
            quantity=body.quantity,
            uom=body.uom,
            note=body.note,
        )
    )
    return await _answer(lambda: recall_cases.case_record(conn, case_id))


@router.post("/{case_id}/places", status_code=201, dependencies=CHANGE)
async def place_action(
    case_id: CaseId, body: recall_cases.PlaceAction, request: Request, conn: Conn
) -> recall_cases.CaseRecord:
    """Record stock at one of the case's places put on hold or destroyed."""
    lot = await _lot(conn, body.lot)
    await _answer(
        lambda: recall_cases.record(
            conn,
            case_id,
            body.action,
            _who(request),
            place=body.place,
            lot=lot,
            happened_at=body.happened_at,
            quantity=body.quantity,
            uom=body.uom,
            note=body.note,
        )
    )
    return await _answer(lambda: recall_cases.case_record(conn, case_id))


@router.post("/{case_id}/hold", dependencies=CHANGE)
async def hold_lots(
    case_id: CaseId, body: recall_cases.HoldLots, request: Request, conn: Conn
) -> recall_cases.LotsHeld:
    """Put every lot of the case on hold (GET /api/v1/holds lists them), the case named in
    each hold's reason; lots on hold already keep their own hold."""
    held = await _answer(lambda: recall_cases.hold_lots(conn, case_id, body.reason, _who(request)))
    wake = getattr(request.app.state, "holds_wake", None)
    if wake is not None:
        wake.set()  # this process's announcer tells the edges (cloud_collector/holds.py)
    return held


@router.post("/{case_id}/close", dependencies=CHANGE)
async def close_case(
    case_id: CaseId, body: recall_cases.Close, request: Request, conn: Conn
) -> recall_cases.CaseRecord:
    """Close the case with a summary: its set is recomputed a last time, then kept as it
    is. 409 if it is closed already."""
    await _answer(lambda: recall_cases.refresh(conn, case_id))
    await _answer(lambda: recall_cases.close(conn, case_id, body.summary, _who(request)))
    return await _answer(lambda: recall_cases.case_record(conn, case_id))


@router.get(
    "/{case_id}/export",
    dependencies=LOOK,
    response_model=None,
    responses={200: {"model": recall_cases.CaseExport}},
)
async def export_case(
    case_id: CaseId,
    request: Request,
    conn: Primary,
    settings: Settings,
    zone: Zone,
    format: Literal["json", "xlsx"] = "json",
) -> Response:
    """The case's record with the FSMA 204 sortable spreadsheet of its lots, as JSON or
    XLSX (dates in time zone `tz`), built whole; the export is recorded on the case (who,
    when): a drill's first one is its time to a complete export."""
    record = await _current(conn, case_id)
    async with export_statements(conn, settings.api_export_statement_timeout_s):
        if format == "json":
            answer = await recall_cases.as_json(conn, record, zone)
            body, rows = answer.model_dump_json().encode(), len(answer.fsma204_rows)
        else:
            body, rows = await recall_cases.as_xlsx(conn, record, zone)
    detail = {"format": format, "fsma204_rows": rows, "bytes": len(body), "time_zone": zone.key}
    await _answer(lambda: recall_cases.exported(conn, case_id, _who(request), detail))
    media = "application/json" if format == "json" else XLSX
    name = f"recall-case-{case_id}.{format}"
    return Response(body, media_type=media, headers={"Content-Disposition": attachment(name)})
