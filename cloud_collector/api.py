"""The trace HTTP API (FastAPI): the app factory. It builds the app, its state (the
settings, the API's pools, the keyring, this process's consumer counters), the body limits
and the answers to database trouble, and includes the routers of cloud_collector/routes/
(one module per API area).

The pools (`app.state`):

- `read_pool`: GET and HEAD routes (traces, recalls, batches, reports, EPCIS queries;
  endpoints.connection picks it by the method), on TRACE_READ_DATABASE_URL (a
  streaming-replication standby), else on the primary; read-only sessions either way.
- `write_pool`, on the primary: every other method (imports, captures, credentials), and
  the GETs that must see this API's own writes at once (endpoints.primary_connection).
- `control_pool`, on the primary: API key checks (auth.Keyring) and /healthz.
- `read_control_pool`, on the standby when one is set: /healthz's look at it.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from psycopg import DataError, OperationalError
from psycopg.errors import QueryCanceled
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cloud_collector import pages, queries
from cloud_collector.auth import Keyring
from cloud_collector.consumer import IngestCounters
from cloud_collector.endpoints import READ_METHODS
from cloud_collector.http_limits import BodyLimitMiddleware, BodyLimits, h11_with_header_deadline
from cloud_collector.retention import RetentionState
from cloud_collector.routes import ROUTERS
from cloud_collector.settings import CollectorSettings


def create_app(
    settings: CollectorSettings,
    ingest: IngestCounters | None = None,
    retention: RetentionState | None = None,
) -> FastAPI:
    """The HTTP API; `ingest` is the consumer's state in this process, `retention` its
    readings retention, for /healthz (None when the process runs no consumer, or no
    retention)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reads = _read_pool(settings)
        # check: a connection the database dropped (restart, failover) is replaced on
        # checkout instead of failing the next request.
        writes = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=settings.api_pool_size,
            open=False,
            kwargs={
                "autocommit": True,
                "options": queries.session_options(settings.api_statement_timeout_s),
            },
            check=AsyncConnectionPool.check_connection,
            name="api-write",
        )
        # Key checks and /healthz: never behind a pool that exports or a flood have taken.
        # On the primary: a key revoked there is refused at once, however far a read
        # standby lags, and checking a key records when it was last used.
        control = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=CONTROL_CONNECTIONS,
            open=False,
            kwargs={"autocommit": True, "options": queries.session_options(5.0)},
            check=AsyncConnectionPool.check_connection,
            name="api-control",
        )
        # /healthz's look at a read standby (whether it answers and how far it lags).
        read_control = (
            AsyncConnectionPool(
                settings.reads_url,
                min_size=1,
                max_size=1,
                open=False,
                kwargs={"autocommit": True, "options": queries.session_options(5.0)},
                check=AsyncConnectionPool.check_connection,
                name="api-read-control",
            )
            if settings.read_database_url not in (None, settings.database_url)
            else None
        )
        app.state.read_pool = reads
        app.state.write_pool = writes
        app.state.control_pool = control
        app.state.read_control_pool = read_control
        app.state.keyring = Keyring(control, ttl_s=settings.api_key_cache_s)
        app.state.sessions = Keyring(control, ttl_s=settings.api_key_cache_s, sessions=True)
        try:
            await writes.open(wait=True, timeout=30)
            await control.open(wait=True, timeout=30)
            # A standby that is away does not keep the API (and its writes) from starting:
            # its pools connect when it comes, reads answer 503 until then.
            separate = read_control is not None
            await reads.open(wait=not separate, timeout=30)
            if read_control is not None:
                await read_control.open(wait=False)
            yield
        finally:
            await reads.close()
            await writes.close()
            await control.close()
            if read_control is not None:
                await read_control.close()

    app = FastAPI(
        title="Lot trace API",
        version="1",
        summary="Batches and their process parameters, lot genealogy traces and recalls, GS1 "
        "EPCIS 2.0 interchange and FDA FSMA 204 exports.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.ingest = ingest
    app.state.retention = retention
    app.add_middleware(BodyLimitMiddleware, limits=body_limits(settings))
    _answer_database_trouble(app, settings)
    for router in ROUTERS:
        app.include_router(router)
    pages.install(app)
    return app


# Connections of the control pool: one for the key lookups, the others for /healthz.
CONTROL_CONNECTIONS = 3

# Every connection of the read pool is read-only, on a standby or on the primary alike: a
# read route that tried to write would fail in every test, not first at a site that runs
# a standby.
READ_ONLY = "-c default_transaction_read_only=on"


def _read_pool(settings: CollectorSettings) -> AsyncConnectionPool:
    """The pool of the API's reads (endpoints.connection hands it to GET routes): on
    TRACE_READ_DATABASE_URL (a streaming-replication standby), else on the primary."""
    return AsyncConnectionPool(
        settings.reads_url,
        min_size=1,
        max_size=settings.api_pool_size,
        open=False,
        kwargs={
            "autocommit": True,
            "options": f"{queries.session_options(settings.api_statement_timeout_s)} {READ_ONLY}",
        },
        check=AsyncConnectionPool.check_connection,
        name="api-read",
    )


def body_limits(settings: CollectorSettings) -> BodyLimits:
    """The request body limits of the routes (README, "HTTP limits")."""
    imports = settings.api_import_body_bytes
    return BodyLimits(
        default_bytes=settings.api_body_bytes,
        by_prefix=(
            ("/epcis/capture", settings.api_capture_body_bytes, "TRACE_API_CAPTURE_BODY_BYTES"),
            ("/api/v1/erp/", imports, "TRACE_API_IMPORT_BODY_BYTES"),
            ("/api/v1/qc-results", imports, "TRACE_API_IMPORT_BODY_BYTES"),
        ),
        timeout_s=settings.api_body_timeout_s,
    )


def server_options(settings: CollectorSettings) -> dict[str, Any]:
    """uvicorn's options that bound what idle and slow clients can hold: a request's line
    and headers must arrive within TRACE_API_HEADER_TIMEOUT_S (64 KiB at most); an idle
    keep-alive connection is closed after TRACE_API_KEEP_ALIVE_S; beyond
    TRACE_API_MAX_CONNECTIONS connections and requests at once the server answers 503
    instead of queueing."""
    return {
        "http": h11_with_header_deadline(settings.api_header_timeout_s),
        "timeout_keep_alive": settings.api_keep_alive_s,
        "limit_concurrency": settings.api_max_connections,
        "h11_max_incomplete_event_size": 64 * 1024,  # request line and headers
    }


def _answer_database_trouble(app: FastAPI, settings: CollectorSettings) -> None:
    """A request the database cannot serve now answers 503 with the reason, not 500."""

    @app.exception_handler(QueryCanceled)
    async def too_long(request: Request, err: QueryCanceled) -> Response:
        return JSONResponse(
            {
                "detail": "the query ran past the API's statement timeout "
                f"({settings.api_statement_timeout_s:g} s, TRACE_API_STATEMENT_TIMEOUT_S; "
                f"exports {settings.api_export_statement_timeout_s:g} s, "
                "TRACE_API_EXPORT_STATEMENT_TIMEOUT_S) and was cancelled: narrow the "
                "request (a shorter time range, a smaller lot), or ask an operator"
            },
            503,
        )

    @app.exception_handler(DataError)
    async def unstorable(request: Request, err: DataError) -> Response:
        # Class 22 (a value out of range, text with NUL, a malformed literal): the request
        # carried it, so the request is wrong, whatever route it reached.
        return JSONResponse(
            {
                "detail": "the request holds a value the database cannot take: "
                f"{err.diag.message_primary or err}"
            },
            422,
        )

    @app.exception_handler(PoolTimeout)
    async def pool_busy(request: Request, err: PoolTimeout) -> Response:
        detail = (
            "every database connection of the API is busy "
            f"(TRACE_API_POOL_SIZE={settings.api_pool_size}): retry in a few seconds"
        )
        standby = settings.read_database_url not in (None, settings.database_url)
        if standby and request.method in READ_METHODS:
            detail = (
                "no connection to the read standby (TRACE_READ_DATABASE_URL) came free or "
                "could be made in time: it is busy or away (GET /healthz says which); "
                "retry in a few seconds"
            )
        return JSONResponse({"detail": detail}, 503, headers={"Retry-After": "2"})

    @app.exception_handler(OperationalError)
    async def database_unreachable(request: Request, err: OperationalError) -> Response:
        return JSONResponse(
            {
                "detail": "the database did not answer; retry shortly (GET /healthz says "
                f"whether it is reachable): {type(err).__name__}"
            },
            503,
            headers={"Retry-After": "5"},
        )
