"""The batch pages: the list of batches filtered by line, product, date and "had an
excursion"; one batch with a chart of every tag (spec-limit band, excursions marked),
its percentiles, QC, operators, equipment, inputs and outputs; and one tag overlaid
across several batches, aligned on each batch's start: batches of the same line or of the
same product (offered on a batch's page), or those checked in the filtered list.

The charts' series come from the API's own batch parameters route, fetched by the page's
script with the session (static/batch.js): per-minute rollup buckets when the batch holds
more readings than RAW_SERIES_READINGS (so a batch of a million readings is drawn from
its rollups, never its rows), buckets of the readings themselves for a small batch."""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from cloud_collector import queries, trace
from cloud_collector.auth import Role
from cloud_collector.endpoints import Conn
from cloud_collector.pages.guard import page_of
from cloud_collector.pages.render import page, plant_zone
from cloud_collector.trace.rows import lots_where

router = APIRouter(include_in_schema=False, dependencies=page_of(Role.reader))

# Above this many readings a batch's charts are drawn from the per-minute rollups only.
RAW_SERIES_READINGS = 200_000
CHART_POINTS = 1000  # about this many buckets per tag at most
COMPARE_POINTS = 500
COMPARE_BATCHES = 12
LIST_LIMIT = 200

_LINES = "select distinct line_id from batches order by line_id limit 500"
# The tags of the listed batches, for the overlay's choice of tag.
_TAGS_OF = """
select distinct device, tag from batch_tag_stats where batch_id = any(%s)
order by device, tag limit 500
"""
PEERS = 30  # batches offered for the overlay on a batch's page
# Batches of the same line, or that made one of the same products, for the overlay's choice.
_PEERS = {
    "line": f"""
select batch_id, started_at from batches where line_id = %(line)s
order by coalesce(started_at, first_seen) desc, batch_id limit {PEERS}
""",
    "product": f"""
select b.batch_id, b.started_at from batches b
where exists (select 1 from batch_outputs o join lots l using (lot_id)
              where o.batch_id = b.batch_id and l.gtin = any(%(gtins)s))
order by coalesce(b.started_at, b.first_seen) desc, b.batch_id limit {PEERS}
""",
}
Peers = Literal["line", "product"]


def _day(text: str) -> datetime | None:
    """A date of the filter form (YYYY-MM-DD, the plant's day) as the instant it starts."""
    return None if not text else datetime.combine(datetime.fromisoformat(text).date(), time())


@router.get("/batches")
async def batch_list(
    request: Request,
    conn: Conn,
    line: Annotated[str, Query(max_length=128)] = "",
    product: Annotated[str, Query(max_length=128)] = "",
    start: Annotated[
        str, Query(alias="from", max_length=10, pattern=r"^(\d{4}-\d{2}-\d{2})?$")
    ] = "",
    end: Annotated[str, Query(alias="to", max_length=10, pattern=r"^(\d{4}-\d{2}-\d{2})?$")] = "",
    excursion: bool = False,
) -> Response:
    zone = plant_zone(request)
    try:
        first = _day(start)
        last = _day(end)
    except ValueError as err:
        raise HTTPException(422, f"a date of the filter is not a calendar date: {err}") from err
    chosen = queries.BatchFilter(
        line=line.strip() or None,
        product=product.strip() or None,
        start=first.replace(tzinfo=zone) if first else None,
        # The whole last day, in the plant's time zone.
        end=(last + timedelta(days=1)).replace(tzinfo=zone) if last else None,
        excursion=excursion,
    )
    rows = await queries.list_batches(conn, LIST_LIMIT, chosen)
    cur = await conn.execute(_TAGS_OF, ([r.batch_id for r in rows if r.readings],))
    tags = [f"{device}/{tag}" for device, tag in await cur.fetchall()]
    lines = [r[0] for r in await (await conn.execute(_LINES)).fetchall()]
    return page(
        request,
        "batches.html",
        rows=rows,
        lines=lines,
        tags=tags,
        compare_most=COMPARE_BATCHES,
        line=line,
        product=product,
        start=start,
        end=end,
        excursion=excursion,
        limit=LIST_LIMIT,
    )


def chart_points(tags: list[queries.TagSummary]) -> int:
    """How many buckets to ask the batch parameters route for: CHART_POINTS, or for a batch
    above RAW_SERIES_READINGS at most one per minute of its span, so that the route reads
    its per-minute rollups and not its readings."""
    if not tags:
        return 0
    if sum(t.count for t in tags) <= RAW_SERIES_READINGS:
        return CHART_POINTS
    span = max(t.last_time for t in tags) - min(t.first_time for t in tags)
    return max(1, min(CHART_POINTS, math.floor(span.total_seconds() / 60)))


@router.get("/batches/{batch_id}")
async def batch_page(
    request: Request, batch_id: str, conn: Conn, peers: Peers = "line"
) -> Response:
    """One batch; its overlay offers the batches of its line, or with `peers=product`
    those that made one of its products."""
    batch = await queries.get_batch(conn, batch_id)
    if batch is None:
        raise HTTPException(
            404, f"batch {batch_id!r} is unknown: check the id, or find it in the batch list"
        )
    traced = (await trace.traced_batches(conn, [batch_id], detail=True))[0]
    lots = [x.lot_id for x in [*traced.inputs, *traced.outputs]]
    codes = {x.lot_id: x for x in await lots_where(conn, "lot_id = any(%s)", (lots,))}
    made = sorted({codes[x.lot_id].gtin for x in traced.outputs if x.lot_id in codes} - {""})
    cur = await conn.execute(_PEERS[peers], {"line": batch.line_id, "gtins": made})
    offered = [(r[0], r[1]) for r in await cur.fetchall()]
    excursions = {(e.device, e.tag): e for e in traced.excursions}
    return page(
        request,
        "batch.html",
        traced=traced,
        batch=batch,
        lots=codes,
        excursions=excursions,
        peers=peers,
        offered=offered,
        made=made,
        chart={
            "batch": batch_id,
            "points": chart_points(traced.parameters),
            "tags": [
                {"device": t.device, "tag": t.tag, "unit": t.unit, "low": t.low, "high": t.high}
                for t in traced.parameters
            ],
        },
    )


@router.get("/compare")
async def compare_page(
    request: Request,
    conn: Conn,
    tag: Annotated[str, Query(min_length=3, max_length=200, pattern=r"^[^/]+/.+$")],
    batch: Annotated[list[str], Query(min_length=1, max_length=COMPARE_BATCHES)],
) -> Response:
    """One tag (`device/tag`) of several batches on one chart, each from its own start."""
    found = []
    for batch_id in dict.fromkeys(batch):
        known = await queries.get_batch(conn, batch_id)
        if known is None:
            raise HTTPException(404, f"batch {batch_id!r} is unknown: uncheck it and retry")
        found.append(known)
    device, _, name = tag.partition("/")
    summaries = await queries.summaries(conn, [b.batch_id for b in found])
    return page(
        request,
        "compare.html",
        batches=found,
        device=device,
        tag=name,
        chart={
            "device": device,
            "tag": name,
            "batches": [
                {
                    "batch": b.batch_id,
                    "started": b.started_at.isoformat() if b.started_at else None,
                    "points": min(
                        COMPARE_POINTS, chart_points(summaries.get(b.batch_id, ([], []))[0])
                    ),
                }
                for b in found
            ],
        },
    )
