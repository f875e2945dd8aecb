"""Holds over HTTP: put a lot on hold or release it (role quality; admin), list holds, a
hold's record and the lots held with it, and a lot's hold history (roles reader, quality);
the alerts held lots raise at shipping doors are in routes/alerts.py. `{lot}` is what
trace.resolve takes.
cloud_collector/holds.py says what a hold does and how the edges learn of it.

Lists page: at most `limit` entries, and the next page's URL in the Link header
(rel="next", its `cursor` parameter), as the EPCIS query does."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from cloud_collector import holds
from cloud_collector.auth import Principal, Role, require
from cloud_collector.endpoints import Conn, resolve_lot

router = APIRouter(prefix="/api/v1", tags=["holds"])

CHANGE = [Depends(require(Role.quality))]
LOOK = [Depends(require(Role.reader, Role.quality))]
Limit = Annotated[int, Query(ge=1, le=10_000)]
# Descendants listed in the answer of a hold or release with `downstream` (all are counted).
Page = Annotated[int, Query(ge=0, le=10_000)]
Cursor = Annotated[int | None, Query(ge=0, le=2**63 - 1)]
HoldId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _who(request: Request) -> str:
    principal: Principal = request.state.principal
    return principal.name


def _announce(request: Request) -> None:
    """Tell this process's announcer (if it runs one) that the hold set changed."""
    wake = getattr(request.app.state, "holds_wake", None)
    if wake is not None:
        wake.set()


@router.post("/lots/{lot:path}/hold", status_code=201, dependencies=CHANGE)
async def hold_lot(
    lot: str, body: holds.HoldRequest, request: Request, conn: Conn, limit: Page = holds.PAGE
) -> holds.Held:
    """Put the lot on hold (`downstream: true`: and every lot made from it, at any depth),
    with the reason; the key's name is kept as who held it. The descendants are counted and
    the first `limit` listed; GET /api/v1/holds/{hold_id}/lots pages through them. 409 if
    the lot is held already (the answer names that hold)."""
    target = await resolve_lot(conn, lot)
    who = _who(request)
    try:
        held = await holds.hold(conn, target, body.reason, who, body.downstream, limit)
    except holds.AlreadyHeld as err:
        detail = {"message": str(err), "hold": err.hold.model_dump(mode="json")}
        raise HTTPException(409, detail) from err
    _announce(request)
    return held


@router.post("/lots/{lot:path}/release", dependencies=CHANGE)
async def release_lot(
    lot: str, body: holds.ReleaseRequest, request: Request, conn: Conn, limit: Page = holds.PAGE
) -> holds.Released:
    """Release the lot's hold (`downstream: true`: and the holds put with it on what was
    made from it; counted, the first `limit` listed), with the reason; kept as who released
    it and when. 409 if not held."""
    target = await resolve_lot(conn, lot)
    who = _who(request)
    try:
        released = await holds.release(conn, target, body.reason, who, body.downstream, limit)
    except holds.NotHeld as err:
        raise HTTPException(409, str(err)) from err
    _announce(request)
    return released


def _paged(page: holds.HoldPage, request: Request, response: Response) -> list[holds.Hold]:
    if page.next_cursor is not None:
        url = request.url.include_query_params(cursor=page.next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return page.holds


@router.get("/lots/{lot:path}/holds", dependencies=LOOK)
async def lot_holds(
    lot: str,
    conn: Conn,
    request: Request,
    response: Response,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> list[holds.Hold]:
    """Every hold of the lot, newest first: who held and released it, when and why."""
    target = await resolve_lot(conn, lot)
    page = await holds.holds(conn, "all", target.lot_id, limit, cursor)
    return _paged(page, request, response)


@router.get("/holds", dependencies=LOOK)
async def list_holds(
    conn: Conn,
    request: Request,
    response: Response,
    state: holds.HoldState = "in_force",
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> list[holds.Hold]:
    """Holds, newest first: in force (the default), released, or all."""
    return _paged(await holds.holds(conn, state, None, limit, cursor), request, response)


@router.get("/holds/{hold_id}", dependencies=LOOK)
async def hold_record(hold_id: HoldId, conn: Conn, alerts: Limit = 1000) -> holds.HoldRecord:
    """The hold's record: the hold, how many lots were held with it, and the alerts that
    named it (newest first, at most `alerts`): its lots read at a shipping door or shipped
    in an event captured through /epcis/capture."""
    found = await holds.record(conn, hold_id, alerts)
    if found is None:
        raise HTTPException(404, f"no hold {hold_id}: GET /api/v1/holds lists them")
    return found


@router.get("/holds/{hold_id}/lots", dependencies=LOOK)
async def hold_lots(
    hold_id: HoldId,
    conn: Conn,
    request: Request,
    response: Response,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> list[holds.Hold]:
    """The holds that came with this one (the lots held with it as its lot's descendants),
    by lot, in force or released; a page of `limit`, the next one in the Link header."""
    if await holds.hold_of(conn, hold_id) is None:
        raise HTTPException(404, f"no hold {hold_id}: GET /api/v1/holds lists them")
    page = await holds.held_with_page(conn, hold_id, cursor, limit)
    return _paged(page, request, response)
