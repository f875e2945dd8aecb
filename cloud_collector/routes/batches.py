"""Batches and their process parameters (role reader)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from cloud_collector import queries
from cloud_collector.endpoints import READ, Conn, json_response

router = APIRouter(prefix="/api/v1/batches", dependencies=READ)


@router.get("")
async def list_batches(
    conn: Conn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[queries.Batch]:
    return await queries.list_batches(conn, limit)


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
