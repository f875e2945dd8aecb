"""The trace HTTP API (FastAPI). Every answer is JSON with a pydantic model behind it."""

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from psycopg import AsyncConnection, DataError, OperationalError
from psycopg.errors import QueryCanceled
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from cloud_collector import epcis, erp, health, queries, trace
from cloud_collector.auth import Keyring
from cloud_collector.consumer import IngestCounters
from cloud_collector.credentials_api import router as credentials_router
from cloud_collector.endpoints import (
    IMPORT,
    READ,
    Conn,
    attachment,
    connection,
    export_statements,
    import_rows,
    resolve_lot,
)
from cloud_collector.epcis.document import CaptureLimits
from cloud_collector.erp import storable
from cloud_collector.fsma204 import router as fsma204_router
from cloud_collector.http_limits import BodyLimitMiddleware, BodyLimits, h11_with_header_deadline
from cloud_collector.settings import CollectorSettings
from cloud_collector.spreadsheet_cells import csv_row, neutralised_copy_csv


def create_app(settings: CollectorSettings, ingest: IngestCounters | None = None) -> FastAPI:
    """The HTTP API; `ingest` is the consumer's state in this process, for /healthz (None
    when the process runs no consumer)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # check: a connection the database dropped (restart, failover) is replaced on
        # checkout instead of failing the next request.
        pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=settings.api_pool_size,
            open=False,
            kwargs={
                "autocommit": True,
                "options": queries.session_options(settings.api_statement_timeout_s),
            },
            check=AsyncConnectionPool.check_connection,
            name="api",
        )
        # Key checks and /healthz: never behind a pool that exports or a flood have taken.
        control = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=CONTROL_CONNECTIONS,
            open=False,
            kwargs={"autocommit": True, "options": queries.session_options(5.0)},
            check=AsyncConnectionPool.check_connection,
            name="api-control",
        )
        app.state.pool = pool
        app.state.control_pool = control
        app.state.keyring = Keyring(control, ttl_s=settings.api_key_cache_s)
        try:
            await pool.open(wait=True, timeout=30)
            await control.open(wait=True, timeout=30)
            yield
        finally:
            await pool.close()
            await control.close()

    app = FastAPI(
        title="Lot trace API",
        version="1",
        summary="Batches and their process parameters, lot genealogy traces and recalls, GS1 "
        "EPCIS 2.0 interchange and FDA FSMA 204 exports.",
        lifespan=lifespan,
    )
    app.state.ingest = ingest
    app.state.export_statement_timeout_s = settings.api_export_statement_timeout_s
    app.add_middleware(BodyLimitMiddleware, limits=body_limits(settings))
    _answer_database_trouble(app, settings)

    @app.get(
        "/healthz",
        response_model=None,
        responses={200: {"model": health.Health}, 503: {"model": health.Health}},
    )
    async def healthz() -> Response:
        """The API, its database and this process's consumer, each said separately; no key
        needed. 503 when the database does not answer (status down), 200 otherwise (ok, or
        degraded when the consumer or the API's pool is in trouble)."""
        try:
            answer = await health.check(
                app.state.pool,
                app.state.control_pool,
                app.state.ingest,
                app.state.keyring.lookups,
            )
        except Exception as err:  # /healthz says what is wrong; it never fails itself
            return JSONResponse(
                {"status": "down", "error": f"{type(err).__name__}: {err}"[:500]}, 503
            )
        return Response(
            answer.model_dump_json(),
            status_code=503 if answer.status == "down" else 200,
            media_type="application/json",
        )

    @app.get("/api/v1/batches", dependencies=READ)
    async def list_batches(
        conn: Conn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[queries.Batch]:
        return await queries.list_batches(conn, limit)

    @app.get(
        "/api/v1/batches/{batch_id}/parameters",
        response_model=None,
        responses={200: {"model": queries.BatchParameters}},
        dependencies=READ,
    )
    async def batch_parameters(
        batch_id: str, conn: Conn, points: Annotated[int, Query(ge=0, le=10_000)] = 1000
    ) -> Response:
        """Per tag: count, min, max, mean, percentiles, first and last time; excursions
        outside the profile's spec limits; and a series downsampled with time_bucket to
        about `points` points per tag (0: none)."""
        batch = await queries.get_batch(conn, batch_id)
        if batch is None:
            raise HTTPException(
                status_code=404,
                detail=f"batch {batch_id!r} is unknown: check the id (GET /api/v1/batches lists "
                "recent batches)",
            )
        return json_response(await queries.batch_parameters(conn, batch, points))

    async def _trace(
        conn: AsyncConnection, lot: str, direction: trace.Direction, format: str
    ) -> trace.Trace | Response:
        answer = await trace.trace(conn, await resolve_lot(conn, lot), direction)
        if format == "json":
            return json_response(answer)
        return csv_response(
            f"{direction}-{answer.lot.lot_code}.csv",
            trace.TRACE_CSV_COLUMNS,
            [x.model_dump() for x in answer.lots],
        )

    @app.get(
        "/api/v1/lots/{lot:path}/trace/backward",
        response_model=None,
        responses={200: {"model": trace.Trace}},
        dependencies=READ,
    )
    async def trace_backward(
        lot: str, conn: Conn, format: Literal["json", "csv"] = "json"
    ) -> trace.Trace | Response:
        """The full upstream tree to supplier lots, with each batch's line, equipment,
        times, operators, QC results, parameter summary and excursions, and the gaps met.
        `?format=csv`: the lots as a spreadsheet."""
        return await _trace(conn, lot, "backward", format)

    @app.get(
        "/api/v1/lots/{lot:path}/trace/forward",
        response_model=None,
        responses={200: {"model": trace.Trace}},
        dependencies=READ,
    )
    async def trace_forward(
        lot: str, conn: Conn, format: Literal["json", "csv"] = "json"
    ) -> trace.Trace | Response:
        """Every descendant lot at any depth, and every shipment and customer that received
        any of them, with quantities, and the gaps met. `?format=csv`: the lots."""
        return await _trace(conn, lot, "forward", format)

    @app.get(
        "/api/v1/lots/{lot:path}/recall",
        response_model=None,
        responses={200: {"model": trace.Recall}},
        dependencies=READ,
    )
    async def recall(
        lot: str, conn: Conn, format: Literal["json", "csv"] = "json"
    ) -> trace.Recall | Response:
        """The recall list: affected lots, where their stock is (on hand, shipped), and
        the customers and orders with quantities. `?format=csv` for a spreadsheet."""
        target = await resolve_lot(conn, lot)
        if format == "json":
            return json_response(await trace.recall(conn, target))
        pool = app.state.pool

        async def lines() -> AsyncIterator[str | bytes]:
            # Its own connection: the request's is given back before a stream ends.
            yield _csv_line(trace.RECALL_CSV_COLUMNS)
            async with (
                pool.connection() as stream_conn,
                export_statements(stream_conn, settings.api_export_statement_timeout_s),
            ):
                blocks = trace.recall_csv(stream_conn, target)
                async for block in neutralised_copy_csv(
                    blocks, trace.RECALL_CSV_COLUMNS, RECALL_CSV_NUMBERS
                ):
                    yield block

        return StreamingResponse(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": attachment(f"recall-{target.lot_code}.csv")},
        )

    @app.post("/api/v1/recall/by-condition", dependencies=READ)
    async def recall_by_condition(body: ConditionWindow, conn: Conn) -> trace.ConditionRecall:
        """Given a tag and a condition (above or below a limit, or bad quality) in a time
        range (with its UTC offset; at most TRACE_CONDITION_MAX_DAYS days, 31 unless set):
        the batches that ran while it held, and everything downstream of them."""
        days = (body.end - body.start) / timedelta(days=1)
        if days > settings.condition_max_days:
            raise HTTPException(
                422,
                f"the time range from {body.start.isoformat()} to {body.end.isoformat()} is "
                f"{days:.1f} days; recall by condition looks at most "
                f"{settings.condition_max_days} days at a time (TRACE_CONDITION_MAX_DAYS): "
                "split the range into several requests",
            )
        return await trace.recall_by_condition(conn, body)

    @app.put("/api/v1/erp/products", dependencies=IMPORT)
    async def import_products(rows: list[erp.Product], conn: Conn) -> dict[str, int]:
        return await import_rows(conn, erp.products, rows)

    @app.put("/api/v1/erp/customers", dependencies=IMPORT)
    async def import_customers(rows: list[erp.Customer], conn: Conn) -> dict[str, int]:
        return await import_rows(conn, erp.customers, rows)

    @app.put("/api/v1/erp/shipments", dependencies=IMPORT)
    async def import_shipments(rows: list[erp.Shipment], conn: Conn) -> dict[str, int]:
        """Which order and customer each shipment document belongs to."""
        return await import_rows(conn, erp.shipments, rows)

    @app.put("/api/v1/erp/purchase-orders", dependencies=IMPORT)
    async def import_purchase_orders(rows: list[erp.PurchaseOrder], conn: Conn) -> dict[str, int]:
        """Which supplier delivered each purchase order, and the supplier's own lot codes."""
        return await import_rows(conn, erp.purchase_orders, rows)

    @app.post("/api/v1/qc-results", status_code=201, dependencies=IMPORT)
    async def import_qc_results(rows: list[erp.QcResult], conn: Conn) -> dict[str, int]:
        """In-process (IPQC), final (FQC) and incoming checks, per batch or per lot."""
        return await import_rows(conn, erp.qc_results, rows)

    app.include_router(credentials_router)
    app.include_router(fsma204_router)
    app.include_router(
        epcis.router(connection, CaptureLimits(max_bytes=settings.api_capture_body_bytes))
    )
    return app


# Connections of the control pool: one for the key lookups, the others for /healthz.
CONTROL_CONNECTIONS = 3
# Columns of the recall CSV that are numbers: written as the database formats them (a
# negative quantity stays a number); every other column is text, neutralised.
RECALL_CSV_NUMBERS = ("lot_id", "quantity")


class ConditionWindow(trace.Condition):
    """trace.Condition with times that say their UTC offset: a time without one means a
    different instant in each plant's time zone (and cannot be compared with one that has
    one: Python refuses)."""

    start: AwareDatetime = Field(alias="from")
    end: AwareDatetime = Field(alias="to")

    @field_validator("tag", "device", mode="after")
    @classmethod
    def _storable_text(cls, value: str | None) -> str | None:
        return None if value is None else storable(value)


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
        return JSONResponse(
            {
                "detail": "every database connection of the API is busy "
                f"(TRACE_API_POOL_SIZE={settings.api_pool_size}): retry in a few seconds"
            },
            503,
            headers={"Retry-After": "2"},
        )

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


def _csv_line(values: Any) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(["" if v is None else v for v in csv_row(values)])
    return out.getvalue()


def json_response(answer: BaseModel) -> Response:
    """An answer serialised by pydantic in one pass (a recall runs to tens of thousands of
    lines, which FastAPI's generic encoder walks field by field)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def csv_response(filename: str, columns: list[str], rows: list[dict[str, Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(csv_row(columns))
    writer.writerows(csv_row(row.get(c) for c in columns) for row in rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": attachment(filename)},
    )
