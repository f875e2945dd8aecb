"""Holds over HTTP: put a lot on hold or release it (role quality; admin), list holds and a
lot's hold history (roles reader, quality); the alerts held lots raise at shipping doors
are in routes/alerts.py. `{lot}` is what trace.resolve takes. cloud_collector/holds.py says
what a hold does and how the edges learn of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from cloud_collector import holds
from cloud_collector.auth import Principal, Role, require
from cloud_collector.endpoints import Conn, resolve_lot

router = APIRouter(prefix="/api/v1", tags=["holds"])

CHANGE = [Depends(require(Role.quality))]
LOOK = [Depends(require(Role.reader, Role.quality))]
Limit = Annotated[int, Query(ge=1, le=10_000)]


def _who(request: Request) -> str:
    principal: Principal = request.state.principal
    return principal.name


def _announce(request: Request) -> None:
    """Tell this process's announcer (if it runs one) that the hold set changed."""
    wake = getattr(request.app.state, "holds_wake", None)
    if wake is not None:
        wake.set()


@router.post("/lots/{lot:path}/hold", status_code=201, dependencies=CHANGE)
async def hold_lot(lot: str, body: holds.HoldRequest, request: Request, conn: Conn) -> holds.Held:
    """Put the lot on hold (`downstream: true`: and every lot made from it, at any depth),
    with the reason; the key's name is kept as who held it. 409 if the lot is held already
    (the answer names that hold)."""
    target = await resolve_lot(conn, lot)
    try:
        held = await holds.hold(conn, target, body.reason, _who(request), body.downstream)
    except holds.AlreadyHeld as err:
        detail = {"message": str(err), "hold": err.hold.model_dump(mode="json")}
        raise HTTPException(409, detail) from err
    _announce(request)
    return held


@router.post("/lots/{lot:path}/release", dependencies=CHANGE)
async def release_lot(
    lot: str, body: holds.ReleaseRequest, request: Request, conn: Conn
) -> holds.Released:
    """Release the lot's hold (`downstream: true`: and the holds put with it on what was
    made from it), with the reason; kept as who released it and when. 409 if not held."""
    target = await resolve_lot(conn, lot)
    try:
        released = await holds.release(conn, target, body.reason, _who(request), body.downstream)
    except holds.NotHeld as err:
        raise HTTPException(409, str(err)) from err
    _announce(request)
    return released


@router.get("/lots/{lot:path}/holds", dependencies=LOOK)
async def lot_holds(lot: str, conn: Conn, limit: Limit = 1000) -> list[holds.Hold]:
    """Every hold of the lot, newest first: who held and released it, when and why."""
    target = await resolve_lot(conn, lot)
    return await holds.holds(conn, "all", target.lot_id, limit)


@router.get("/holds", dependencies=LOOK)
async def list_holds(
    conn: Conn, state: holds.HoldState = "in_force", limit: Limit = 1000
) -> list[holds.Hold]:
    """Holds, newest first: in force (the default), released, or all."""
    return await holds.holds(conn, state, None, limit)
