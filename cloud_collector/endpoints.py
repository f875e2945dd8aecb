"""What every endpoint of the HTTP API shares, written once: the roles a route accepts, the
request's pooled connection (GET and HEAD on the read pool, which a standby may serve;
other methods on the primary), the app's settings and pool (what create_app put in
`app.state`), a lot as the client names it (404 unknown, 409 ambiguous with the candidates),
an ERP import in one transaction (422 on a reference to nothing), and answers as JSON or
CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from psycopg import AsyncConnection, DataError, IntegrityError
from psycopg.errors import ForeignKeyViolation
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from cloud_collector import erp, trace
from cloud_collector.auth import Role, require
from cloud_collector.settings import CollectorSettings
from cloud_collector.spreadsheet_cells import csv_row

# Every route but /healthz names the roles it accepts (cloud_collector/auth.py; admin: all).
READ = [Depends(require(Role.reader))]
IMPORT = [Depends(require(Role.importer))]


class KeyNotCheckedFirst(RuntimeError):
    """A route asked for a connection before its key was checked: a bug in the route."""


# Methods whose routes only read: they are served from the read pool (api.py), which is on
# the read standby when one is set (TRACE_READ_DATABASE_URL) and read-only in any case.
READ_METHODS = frozenset({"GET", "HEAD"})


def _checked(request: Request) -> None:
    if getattr(request.state, "principal", None) is None:
        raise KeyNotCheckedFirst(
            f"{request.method} {request.url.path} takes a database connection before "
            "checking the API key: declare its auth.require dependency first"
        )


def app_pool(request: Request) -> AsyncConnectionPool:
    """The pool a request's queries run on, chosen here for every route by its method: the
    read pool for GET and HEAD (a standby may answer them), the primary's for the rest.
    Also for an answer streamed on its own connection after the request's connection has
    gone back (the recall CSV, an FSMA 204 spreadsheet)."""
    state = request.app.state
    pool: AsyncConnectionPool = (
        state.read_pool if request.method in READ_METHODS else state.write_pool
    )
    return pool


async def connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection for the length of the request (of app_pool's choosing), only once the
    caller's key has been checked (auth.require ran first): a request with a bogus key must
    never hold one. FastAPI resolves a route's `dependencies=[...]` before its parameters,
    and parameters in the order they are declared; a route that gets this wrong fails here
    on every request, and in tests/cloud_collector/test_auth.py before it ships."""
    _checked(request)
    async with app_pool(request).connection() as conn:
        yield conn


async def primary_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection of the primary for a GET that must see what this API has just written
    (a capture job's status right after its 202), which a lagging standby may not have
    replayed yet. The same key check first."""
    _checked(request)
    async with request.app.state.write_pool.connection() as conn:
        yield conn


# A connection taken inside a route rather than as its parameter, when the route must do
# slow work first (an EPCIS capture checks its whole document): the same key check first.
connected = asynccontextmanager(connection)


def app_settings(request: Request) -> CollectorSettings:
    """The settings the app was made with (create_app keeps them in `app.state`)."""
    settings: CollectorSettings = request.app.state.settings
    return settings


Settings = Annotated[CollectorSettings, Depends(app_settings)]
Pool = Annotated[AsyncConnectionPool, Depends(app_pool)]


@asynccontextmanager
async def export_statements(conn: AsyncConnection, timeout_s: float) -> AsyncIterator[None]:
    """A transaction in which statements may run `timeout_s` instead of the API's usual
    statement timeout: an export streamed to the client (the recall CSV, an FSMA 204
    spreadsheet) is one long statement by design. `set local`: the pool gets the connection
    back with its usual timeout."""
    async with conn.transaction():
        await conn.execute(
            "select set_config('statement_timeout', %s, true)", (f"{int(timeout_s * 1000)}ms",)
        )
        yield


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
    """An ERP import, all rows or none; a row the database refuses (a reference to nothing)
    is a 422 that names it, never a 500."""
    try:
        async with conn.transaction():
            return {"imported": await run(conn, rows)}
    except erp.UnknownReference as err:
        raise HTTPException(422, str(err)) from err
    except ForeignKeyViolation as err:
        raise HTTPException(
            422,
            f"{err.diag.message_detail or err}: import what it refers to first (customers "
            "before shipments, locations before what names them)",
        ) from err
    except (IntegrityError, DataError) as err:
        raise HTTPException(
            422, f"a row was refused by the database: {err.diag.message_primary or err}"
        ) from err


def attachment(filename: str) -> str:
    """A Content-Disposition value for a download, its name reduced to safe characters."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)
    return f'attachment; filename="{safe}"'


def json_response(answer: BaseModel) -> Response:
    """An answer serialised by pydantic in one pass (a recall runs to tens of thousands of
    lines, which FastAPI's generic encoder walks field by field); by alias, as FastAPI
    writes a model (a condition's `from` and `to`)."""
    return Response(answer.model_dump_json(by_alias=True), media_type="application/json")


def csv_line(values: Iterable[Any]) -> str:
    """One CSV line, its text cells neutralised (spreadsheet_cells.csv_row)."""
    out = io.StringIO()
    csv.writer(out).writerow(["" if v is None else v for v in csv_row(values)])
    return out.getvalue()


def csv_response(filename: str, columns: list[str], rows: list[dict[str, Any]]) -> Response:
    """A CSV download of `rows`, built whole (a trace's lots; the recall streams its own)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(csv_row(columns))
    writer.writerows(csv_row(row.get(c) for c in columns) for row in rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": attachment(filename)},
    )
