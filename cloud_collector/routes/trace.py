"""Lot traces (backward to supplier lots, forward to customers), the recall of a lot, and
the recall by process condition (role reader). `{lot}` is what trace.resolve takes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Literal

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection
from pydantic import AwareDatetime, Field, field_validator

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
    timeout_s = settings.api_export_statement_timeout_s

    async def lines() -> AsyncIterator[str | bytes]:
        # Its own connection: the request's is given back before a stream ends.
        yield csv_line(trace.RECALL_CSV_COLUMNS)
        async with pool.connection() as stream_conn, export_statements(stream_conn, timeout_s):
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


@router.post("/recall/by-condition")
async def recall_by_condition(
    body: ConditionWindow, conn: Conn, settings: Settings
) -> trace.ConditionRecall:
    """Given a tag and a condition (above or below a limit, or bad quality) in a time
    range (with its UTC offset; at most TRACE_CONDITION_MAX_DAYS days, 31 unless set):
    the batches that ran while it held, and everything downstream of them."""
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
