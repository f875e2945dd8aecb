"""What every endpoint of the HTTP API shares, written once: the roles a route accepts, the
request's pooled connection, a lot as the client names it (404 unknown, 409 ambiguous with
the candidates), and an ERP import in one transaction (422 on a reference to nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from psycopg import AsyncConnection

from cloud_collector import erp, trace
from cloud_collector.auth import Role, require

# Every route but /healthz names the roles it accepts (cloud_collector/auth.py; admin: all).
READ = [Depends(require(Role.reader))]
IMPORT = [Depends(require(Role.importer))]


async def connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection of the app's pool for the length of the request."""
    async with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[AsyncConnection, Depends(connection)]


async def resolve_lot(conn: AsyncConnection, text: str) -> trace.Lot:
    """The lot `text` names (what the trace endpoints take), or the HTTP error that says why
    there is not exactly one."""
    try:
        return await trace.resolve(conn, text)
    except trace.UnknownLot as err:
        raise HTTPException(404, str(err)) from err
    except trace.AmbiguousLot as err:
        raise HTTPException(
            409, {"message": str(err), "candidates": [c.model_dump() for c in err.candidates]}
        ) from err


Importer = Callable[[AsyncConnection, list[Any]], Awaitable[int]]


async def import_rows(conn: AsyncConnection, run: Importer, rows: list[Any]) -> dict[str, int]:
    """An ERP import, all rows or none."""
    try:
        async with conn.transaction():
            return {"imported": await run(conn, rows)}
    except erp.UnknownReference as err:
        raise HTTPException(422, str(err)) from err


def attachment(filename: str) -> str:
    """A Content-Disposition value for a download, its name reduced to safe characters."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)
    return f'attachment; filename="{safe}"'
