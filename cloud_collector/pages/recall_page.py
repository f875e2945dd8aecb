"""The recall workspace: for a lot, or for a process condition (a tag above or below a
limit, or of bad quality, in a time range), the affected lots, the stock on hand by place,
the shipments and customers with quantities, and the gaps; with the downloads the API
serves (the recall list as CSV, or for a condition also as XLSX; the FSMA 204 sortable
spreadsheet as CSV or XLSX). The answers are the trace package's recall and recall by
condition, as the API's routes give them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import ValidationError

from cloud_collector import trace
from cloud_collector.auth import Role
from cloud_collector.endpoints import Conn
from cloud_collector.pages.guard import page_of
from cloud_collector.pages.render import page, plant_zone, settings_of
from cloud_collector.pages.trace_page import lot_search_problem, resolve_search

router = APIRouter(include_in_schema=False, dependencies=page_of(Role.reader))

SHOWN_LINES = 500  # the rest is in the downloads


@router.get("/recall")
async def recall_page(
    request: Request, conn: Conn, lot: Annotated[str, Query(max_length=2000)] = ""
) -> Response:
    text = lot.strip()
    context: dict[str, Any] = {"lot": lot, "found": None, "condition": None}
    if not text:
        return page(request, "recall.html", **context)
    if problem := lot_search_problem(text):
        return page(request, "recall.html", status=422, error=problem, **context)
    try:
        target = await resolve_search(conn, lot)
    except trace.UnknownLot as err:
        return page(request, "recall.html", status=404, error=str(err), **context)
    except trace.AmbiguousLot as err:
        return page(
            request,
            "recall.html",
            status=409,
            error=str(err),
            candidates=err.candidates,
            **context,
        )
    answer = await trace.recall(conn, target)
    codes = {x.lot_id: x.lot_code for x in answer.lines}
    return page(
        request,
        "recall.html",
        **{**context, "found": target},
        recall=answer,
        shown=answer.lines[:SHOWN_LINES],
        shipped=[x for x in answer.lines if x.status == "shipped"],
        lot_codes=codes,
        zone_name=plant_zone(request).key,
    )


def _local(text: str, request: Request) -> datetime:
    """A datetime-local field (the plant's wall clock) as an instant."""
    return datetime.fromisoformat(text).replace(tzinfo=plant_zone(request))


@router.get("/recall/condition")
async def condition_page(
    request: Request,
    conn: Conn,
    tag: Annotated[str, Query(max_length=64)] = "",
    device: Annotated[str, Query(max_length=64)] = "",
    condition: Literal["above", "below", "bad_quality"] = "above",
    limit: float | None = None,
    start: Annotated[str, Query(alias="from", max_length=32)] = "",
    end: Annotated[str, Query(alias="to", max_length=32)] = "",
) -> Response:
    form = {
        "tag": tag,
        "device": device,
        "condition": condition,
        "limit": limit,
        "from": start,
        "to": end,
    }
    context: dict[str, Any] = {"lot": "", "found": None, "condition": form}
    if not tag.strip():
        return page(request, "recall.html", **context)
    try:
        asked = trace.Condition.model_validate(
            {
                "tag": tag.strip(),
                "device": device.strip() or None,
                "condition": condition,
                "limit": limit,
                "from": _local(start, request),
                "to": _local(end, request),
            }
        )
    except (ValueError, ValidationError) as err:
        message = (
            "; ".join(e["msg"] for e in err.errors())
            if isinstance(err, ValidationError)
            else f"a time is not a date and time: {err}"
        )
        raise HTTPException(422, message) from err
    days = (asked.end - asked.start) / timedelta(days=1)
    max_days = settings_of(request).condition_max_days
    if days > max_days:
        raise HTTPException(
            422,
            f"the range is {days:.1f} days; a recall by condition looks at most {max_days} "
            "days at a time (TRACE_CONDITION_MAX_DAYS): split it",
        )
    answer = await trace.recall_by_condition(conn, asked)
    return page(
        request,
        "recall.html",
        **context,
        by_condition=answer,
        lot_codes={x.lot_id: x.lot_code for x in answer.lots},
        download_query=download_query(asked),
        zone_name=plant_zone(request).key,
    )


def download_query(asked: trace.Condition) -> str:
    """The condition as the API's downloads take it in their query (GET
    /api/v1/recall/by-condition, /api/v1/fsma204/recall/by-condition): times with their
    offset, so that the link means the same instant wherever it is opened."""
    fields = {
        "tag": asked.tag,
        "device": asked.device,
        "condition": asked.condition,
        "limit": asked.limit,
        "from": asked.start.isoformat(),
        "to": asked.end.isoformat(),
    }
    return urlencode({k: v for k, v in fields.items() if v is not None})
