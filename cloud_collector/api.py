"""The trace HTTP API (FastAPI). Every answer is JSON with a pydantic model behind it."""

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Response
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from cloud_collector import epcis, erp, queries, trace
from cloud_collector.consumer import IngestCounters
from cloud_collector.credentials_api import router as credentials_router
from cloud_collector.endpoints import (
    IMPORT,
    READ,
    Conn,
    attachment,
    connection,
    import_rows,
    resolve_lot,
)
from cloud_collector.fsma204 import router as fsma204_router
from cloud_collector.settings import CollectorSettings


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
            max_size=10,
            open=False,
            kwargs={"autocommit": True, "options": queries.SESSION_OPTIONS},
            check=AsyncConnectionPool.check_connection,
        )
        await pool.open(wait=True, timeout=30)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Lot trace API",
        version="1",
        summary="Batches and their process parameters, lot genealogy traces and recalls, GS1 "
        "EPCIS 2.0 interchange and FDA FSMA 204 exports.",
        lifespan=lifespan,
    )
    app.state.ingest = ingest

    @app.get("/healthz")
    async def healthz(conn: Conn) -> dict[str, str]:
        await conn.execute("select 1")
        return {"status": "ok"}

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
            async with pool.connection() as stream_conn:
                async for block in trace.recall_csv(stream_conn, target):
                    yield block

        return StreamingResponse(
            lines(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": attachment(f"recall-{target.lot_code}.csv")},
        )

    @app.post("/api/v1/recall/by-condition", dependencies=READ)
    async def recall_by_condition(body: trace.Condition, conn: Conn) -> trace.ConditionRecall:
        """Given a tag and a condition (above or below a limit, or bad quality) in a time
        range: the batches that ran while it held, and everything downstream of them."""
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
    app.include_router(epcis.router(connection))
    return app


def _csv_line(values: Any) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(["" if v is None else v for v in values])
    return out.getvalue()


def json_response(answer: BaseModel) -> Response:
    """An answer serialised by pydantic in one pass (a recall runs to tens of thousands of
    lines, which FastAPI's generic encoder walks field by field)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def csv_response(filename: str, columns: list[str], rows: list[dict[str, Any]]) -> Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": attachment(filename)},
    )
