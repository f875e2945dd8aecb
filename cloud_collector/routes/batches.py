"""Batches and their process parameters (role reader)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import AwareDatetime

from cloud_collector import queries
from cloud_collector.endpoints import READ, Conn, json_response

router = APIRouter(prefix="/api/v1/batches", dependencies=READ)

# Text PostgreSQL can hold (no NUL).
_TEXT = r"^[^\x00]*$"


@router.get("")
async def list_batches(
    conn: Conn,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    line: Annotated[str | None, Query(max_length=128, pattern=_TEXT)] = None,
    product: Annotated[
        str | None,
        Query(max_length=128, pattern=_TEXT, description="a GTIN, or part of a product's name"),
    ] = None,
    start: Annotated[
        AwareDatetime | None, Query(alias="from", description="started at or after")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to", description="started before")] = None,
    excursion: Annotated[
        bool, Query(description="only batches with a reading outside its spec limits")
    ] = False,
) -> list[queries.ListedBatch]:
    """The newest batches first, filtered by line, product (what they made), start time
    and "had an excursion"; each with its products and its reading and excursion counts."""
    chosen = queries.BatchFilter(
        line=line or None,
        product=product or None,
        start=start,
        end=end,
        excursion=excursion,
    )
    return await queries.list_batches(conn, limit, chosen)


@router.get(
    "/{batch_id}/parameters",
    response_model=None,
    responses={200: {"model": queries.BatchParameters}},
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
