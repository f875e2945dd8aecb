"""Lot traces (backward to supplier lots, forward to customers), the recall of a lot, and
the recall by process condition (role reader), as JSON and as spreadsheets. `{lot}` is what
trace.resolve takes; a condition is a body (POST) or the query (GET, which a link can
carry: the pages' downloads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import AwareDatetime, Field, ValidationError, field_validator

from cloud_collector import trace
from cloud_collector.endpoints import (
    READ,
    Conn,
    Pool,
    Settings,
    attachment,
    csv_line,
    csv_response,
    export_statements,
    json_response,
    resolve_lot,
)
from cloud_collector.settings import CollectorSettings
from cloud_collector.spreadsheet_cells import neutralised_copy_csv
from protocols.mqtt.contract import storable

router = APIRouter(prefix="/api/v1", dependencies=READ)

# Columns of the recall CSV that are numbers: written as the database formats them (a
# negative quantity stays a number); every other column is text, neutralised.
RECALL_CSV_NUMBERS = ("lot_id", "quantity")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


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


@router.get(
    "/lots/{lot:path}/trace/backward",
    response_model=None,
    responses={200: {"model": trace.Trace}},
)
async def trace_backward(
    lot: str, conn: Conn, format: Literal["json", "csv"] = "json"
) -> trace.Trace | Response:
    """The full upstream tree to supplier lots, with each batch's line, equipment,
    times, operators, QC results, parameter summary and excursions, and the gaps met.
    `?format=csv`: the lots as a spreadsheet."""
    return await _trace(conn, lot, "backward", format)


@router.get(
    "/lots/{lot:path}/trace/forward",
    response_model=None,
    responses={200: {"model": trace.Trace}},
)
async def trace_forward(
    lot: str, conn: Conn, format: Literal["json", "csv"] = "json"
) -> trace.Trace | Response:
    """Every descendant lot at any depth, and every shipment and customer that received
    any of them, with quantities, and the gaps met. `?format=csv`: the lots."""
    return await _trace(conn, lot, "forward", format)


@router.get(
    "/lots/{lot:path}/recall",
    response_model=None,
    responses={200: {"model": trace.Recall}},
)
async def recall(
    lot: str, conn: Conn, pool: Pool, settings: Settings, format: Literal["json", "csv"] = "json"
) -> trace.Recall | Response:
    """The recall list: affected lots, where their stock is (on hand, shipped), and
    the customers and orders with quantities. `?format=csv` for a spreadsheet."""
    target = await resolve_lot(conn, lot)
    if format == "json":
        return json_response(await trace.recall(conn, target))
    return _recall_csv(pool, settings, target, f"recall-{target.lot_code}.csv")


def _recall_csv(
    pool: AsyncConnectionPool,
    settings: CollectorSettings,
    start: trace.Lot | list[int],
    filename: str,
) -> Response:
    """The recall list of `start` (a lot, or the lots a condition's batches made) as CSV,
    streamed as the database formats it, its text cells neutralised."""
    timeout_s = settings.api_export_statement_timeout_s

    async def lines() -> AsyncIterator[str | bytes]:
        # Its own connection: the request's is given back before a stream ends.
        yield csv_line(trace.RECALL_CSV_COLUMNS)
        async with pool.connection() as stream_conn, export_statements(stream_conn, timeout_s):
            blocks = trace.recall_csv(stream_conn, start)
            async for block in neutralised_copy_csv(
                blocks, trace.RECALL_CSV_COLUMNS, RECALL_CSV_NUMBERS
            ):
                yield block

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": attachment(filename)},
    )


@router.post("/recall/by-condition")
async def recall_by_condition(
    body: ConditionWindow, conn: Conn, settings: Settings
) -> trace.ConditionRecall:
    """Given a tag and a condition (above or below a limit, or bad quality) in a time
    range (with its UTC offset; at most TRACE_CONDITION_MAX_DAYS days, 31 unless set):
    the batches that ran while it held, everything downstream of them, their recall list
    (shipped, on hand), the stock on hand by place, shipments and customers, and gaps."""
    check_window(body, settings)
    return await trace.recall_by_condition(conn, body)


def check_window(body: ConditionWindow, settings: CollectorSettings) -> None:
    """422 if the range is longer than a recall by condition looks at once (a recall case
    opened from a condition takes the same check)."""
    days = (body.end - body.start) / timedelta(days=1)
    if days > settings.condition_max_days:
        raise HTTPException(
            422,
            f"the time range from {body.start.isoformat()} to {body.end.isoformat()} is "
            f"{days:.1f} days; recall by condition looks at most "
            f"{settings.condition_max_days} days at a time (TRACE_CONDITION_MAX_DAYS): "
            "split the range into several requests",
        )


def condition_query(
    settings: Settings,
    tag: Annotated[str, Query(min_length=1, max_length=64, description="the reading's tag")],
    condition: Annotated[Literal["above", "below", "bad_quality"], Query()],
    start: Annotated[
        AwareDatetime, Query(alias="from", description="with its UTC offset, e.g. +01:00")
    ],
    end: Annotated[AwareDatetime, Query(alias="to", description="after `from`, with its offset")],
    limit: Annotated[
        float | None, Query(allow_inf_nan=False, description="for above and below")
    ] = None,
    device: Annotated[str | None, Query(max_length=64, description="any device if none")] = None,
) -> ConditionWindow:
    """The condition of a GET, as POST /recall/by-condition takes it in its body: the same
    checks, each refusal a 422 that names the query parameter."""
    try:
        asked = ConditionWindow.model_validate(
            {
                "tag": tag,
                "device": device,
                "condition": condition,
                "limit": limit,
                "from": start,
                "to": end,
            }
        )
    except ValidationError as err:
        raise RequestValidationError(
            [
                {**e, "loc": ("query", *e["loc"])}
                for e in err.errors(include_url=False, include_context=False)
            ]
        ) from err
    check_window(asked, settings)
    return asked


ConditionAsked = Annotated[ConditionWindow, Depends(condition_query)]


@router.get(
    "/recall/by-condition",
    response_model=None,
    responses={200: {"model": trace.ConditionRecall}},
)
async def recall_by_condition_query(
    asked: ConditionAsked,
    conn: Conn,
    pool: Pool,
    settings: Settings,
    format: Literal["json", "csv", "xlsx"] = "json",
) -> trace.ConditionRecall | Response:
    """The recall by condition of the query (`tag`, `condition`, `limit`, `from`, `to`,
    `device`: what POST /recall/by-condition takes): JSON as there; `?format=csv`: its
    recall list with the lot recall CSV's columns, streamed; `?format=xlsx`: a workbook of
    the recall list (the same columns), stock on hand by place, batches and gaps."""
    name = f"recall-{asked.tag}-{asked.condition}-{asked.start:%Y%m%dT%H%M}"
    if format == "csv":
        roots = await trace.condition_roots(conn, asked)
        return _recall_csv(pool, settings, roots, f"{name}.csv")
    if format == "xlsx":
        async with export_statements(conn, settings.api_export_statement_timeout_s):
            answer = await trace.recall_by_condition(conn, asked)
        # Off the event loop: a workbook of tens of thousands of lines takes seconds.
        body = await asyncio.to_thread(trace.condition_recall_xlsx, answer)
        return Response(
            body, media_type=XLSX, headers={"Content-Disposition": attachment(f"{name}.xlsx")}
        )
    return json_response(await trace.recall_by_condition(conn, asked))
