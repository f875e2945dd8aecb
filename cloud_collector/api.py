"""The trace HTTP API (FastAPI). Every answer is JSON with a pydantic model behind it."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from cloud_collector import queries
from cloud_collector.settings import CollectorSettings


async def _connection(request: Request) -> AsyncIterator[AsyncConnection]:
    async with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[AsyncConnection, Depends(_connection)]


def create_app(settings: CollectorSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # check: a connection the database dropped (restart, failover) is replaced on
        # checkout instead of failing the next request.
        pool = AsyncConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=10,
            open=False,
            kwargs={"autocommit": True},
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
        summary="Batches, their process parameters, and (later) lot genealogy traces.",
        lifespan=lifespan,
    )

    @app.get("/healthz")
    async def healthz(conn: Conn) -> dict[str, str]:
        await conn.execute("select 1")
        return {"status": "ok"}

    @app.get("/api/v1/batches")
    async def list_batches(
        conn: Conn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[queries.Batch]:
        return await queries.list_batches(conn, limit)

    @app.get("/api/v1/batches/{batch_id}/parameters")
    async def batch_parameters(batch_id: str, conn: Conn) -> queries.BatchParameters:
        batch = await queries.get_batch(conn, batch_id)
        if batch is None:
            raise HTTPException(
                status_code=404,
                detail=f"batch {batch_id!r} is unknown: check the id (GET /api/v1/batches lists "
                "recent batches)",
            )
        return await queries.batch_parameters(conn, batch)

    return app
