"""Read queries behind the HTTP API (SQL kept here, next to the code that runs it)."""

from __future__ import annotations

import math
from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import Field

from cloud_collector import retention, rollups
from protocols.strict import Strict

# For the API's connections: jit off, as trace queries are many short statements over large
# tables, for which compiling costs more than it saves (tens of ms per trace, measured);
# random_page_cost as for SSDs and cached data, which is where genealogy tables live: at the
# default (4, spinning disks) the planner scanned a million lots to recall ten thousand
# (310 ms instead of 70 ms, measured).
SESSION_OPTIONS = "-c jit=off -c random_page_cost=1.1"


def session_options(statement_timeout_s: float) -> str:
    """SESSION_OPTIONS with a statement timeout: no statement of the API runs longer than
    this (exports raise it for their own transaction, endpoints.export_statements), so a
    costly request cannot hold a connection and a core of the database indefinitely."""
    return f"{SESSION_OPTIONS} -c statement_timeout={max(1, round(statement_timeout_s * 1000))}"


class Batch(Strict):
    batch_id: str
    line_id: str
    edge_id: str
    started_at: datetime | None
    started_by: str | None
    ended_at: datetime | None
    ended_by: str | None
    numbered_by_rule: bool = False  # the edge made the id by the line's numbering rule


class ListedBatch(Batch):
    """A batch as a list shows it: with what it made and how its tags ran."""

    products: list[str]  # the names (else GTINs) of the lots it made
    excursions: int  # readings outside their tag's spec limits
    readings: int


class BatchFilter(Strict):
    """Which batches a list shows; each filter unset lets all through."""

    line: str | None = None
    product: str | None = None  # a GTIN, or part of a product's name
    start: datetime | None = None  # started at or after
    end: datetime | None = None  # started before
    excursion: bool = False  # only those with a reading outside its spec limits


class TagSummary(Strict):
    device: str
    tag: str
    unit: str | None
    count: int  # every reading, whatever its quality
    good_count: int  # the statistics below are over these only
    bad_count: int
    uncertain_count: int
    min: float | None
    max: float | None
    mean: float | None
    p05: float | None = None
    p50: float | None = None
    p95: float | None = None
    first_time: datetime
    last_time: datetime
    # The tag's spec limits (from its device profile) as the rollup last applied them.
    low: float | None = None
    high: float | None = None


class Excursion(Strict):
    """Good readings outside the tag's spec limits (from the device profile) in the batch."""

    device: str
    tag: str
    low: float | None
    high: float | None
    below: int
    above: int
    min: float | None
    max: float | None
    first_time: datetime
    last_time: datetime


class SeriesPoint(Strict):
    time: datetime  # the bucket's start
    count: int
    mean: float | None
    min: float | None
    max: float | None


class TagSeries(Strict):
    device: str
    tag: str
    bucket_s: float
    points: list[SeriesPoint]


class BatchParameters(Strict):
    batch: Batch
    tags: list[TagSummary]
    excursions: list[Excursion] = Field(default_factory=list)
    series: list[TagSeries] = Field(
        default_factory=list
    )  # downsampled with time_bucket to about `points` per tag
    gaps: list[str]  # what makes this answer incomplete, in words


_BATCH = """
select batch_id, line_id, edge_id, started_at, started_by, ended_at, ended_by,
    numbered_by_rule
from batches where batch_id = %s
"""
# The batches, newest first, filtered: by line; by product (what a batch made: a GTIN, or
# part of a product's name); started in [start, end); "had an excursion" (a tag out of its
# spec limits, from the rollups). Each with its products and its reading and excursion
# counts, so a list shows them without a query per batch.
_LIST_BATCHES = """
select b.batch_id, b.line_id, b.edge_id, b.started_at, b.started_by, b.ended_at, b.ended_by,
       b.numbered_by_rule, coalesce(made.products, '{}') as products,
       coalesce(stats.excursions, 0)::bigint as excursions,
       coalesce(stats.readings, 0)::bigint as readings
from batches b
left join lateral (
    select array_agg(distinct coalesce(p.name, l.gtin) order by coalesce(p.name, l.gtin))
               filter (where l.gtin <> '') as products
    from batch_outputs o join lots l using (lot_id) left join products p using (gtin)
    where o.batch_id = b.batch_id
) made on true
left join lateral (
    select sum(s.below + s.above) as excursions, sum(s.count) as readings
    from batch_tag_stats s where s.batch_id = b.batch_id
) stats on true
where (%(line)s::text is null or b.line_id = %(line)s)
  and (%(start)s::timestamptz is null or coalesce(b.started_at, b.first_seen) >= %(start)s)
  and (%(end)s::timestamptz is null or coalesce(b.started_at, b.first_seen) < %(end)s)
  and (%(product)s::text is null or exists (
        select 1 from batch_outputs o join lots l using (lot_id)
        left join products p using (gtin)
        where o.batch_id = b.batch_id
          and (l.gtin = %(product)s or p.name ilike '%%' || %(product)s || '%%')))
  and (not %(excursion)s or coalesce(stats.excursions, 0) > 0)
order by coalesce(b.started_at, b.first_seen) desc, b.batch_id
limit %(limit)s
"""
# The rollups kept at ingest (cloud_collector/rollups.py): no reading is read here. The
# percentiles join only when they were computed at the tag's current reading count.
_SUMMARIES_OF = """
select s.batch_id, s.device, s.tag, s.unit, s.count, s.good_count, s.bad_count,
       s.uncertain_count, s.min, s.max,
       case when s.good_count > 0 then s.sum / s.good_count end as mean,
       {percentiles}, s.first_time, s.last_time,
       s.low, s.high, s.below, s.above, s.excursion_min, s.excursion_max,
       s.excursion_first, s.excursion_last
from batch_tag_stats s
left join batch_tag_percentiles p on p.batch_id = s.batch_id and p.device = s.device
    and p.tag = s.tag and p.at_count = s.count
{live}
where s.batch_id = any(%s) order by s.batch_id, s.device, s.tag
"""
_SUMMARIES = _SUMMARIES_OF.format(percentiles="p.p05, p.p50, p.p95", live="")
# Where nothing may be stored (a read standby, the API's read-only sessions): percentiles
# missing or stale are computed in the query and not kept, and only from every reading of
# the tag (none of them dropped by retention), as the stored ones are.
_SUMMARIES_READ_ONLY = _SUMMARIES_OF.format(
    percentiles=", ".join(
        f"coalesce(p.{name}, case when live.n = s.count then live.q[{i}] end) as {name}"
        for i, name in enumerate(("p05", "p50", "p95"), start=1)
    ),
    live=f"""left join lateral (
    select count(*) as n,
           percentile_cont(array[0.05, 0.5, 0.95]) within group (order by r.value)
               filter (where {rollups.GOOD}) as q
    from readings r
    where p.batch_id is null and r.batch_id = s.batch_id and r.device = s.device
      and r.tag = s.tag and r.time >= s.first_time and r.time <= s.last_time
) live on true""",
)


def writable(conn: AsyncConnection) -> bool:
    """Whether this session may store anything: not on a hot standby, nor in the API's
    read-only sessions (api.READ_ONLY). Both are reported by the server when the session
    starts: no query is asked."""
    status = conn.info.parameter_status
    return status("in_hot_standby") != "on" and status("default_transaction_read_only") != "on"


async def get_batch(conn: AsyncConnection, batch_id: str) -> Batch | None:
    cur = conn.cursor(row_factory=dict_row)
    row = await (await cur.execute(_BATCH, (batch_id,))).fetchone()
    return Batch(**row) if row else None


async def list_batches(
    conn: AsyncConnection, limit: int, chosen: BatchFilter | None = None
) -> list[ListedBatch]:
    """The newest `limit` batches that `chosen` lets through (all, without it)."""
    params = {**(chosen or BatchFilter()).model_dump(), "limit": limit}
    cur = conn.cursor(row_factory=dict_row)
    return [
        ListedBatch(**row) for row in await (await cur.execute(_LIST_BATCHES, params)).fetchall()
    ]


# One bucket width for the whole batch, from its first reading, so that every tag's series
# lines up on a chart:
# whole minutes from the per-minute rollup when the batch is long enough, else the readings
# themselves (bounded by the batch's time span so that only its chunks are read).
_SERIES_FROM_MINUTES = """
select device, tag, time_bucket(%(bucket)s::interval, minute, %(origin)s) as bucket,
       sum(count) as count,
       sum(sum) / nullif(sum(good_count), 0) as mean, min(min) as min, max(max) as max
from batch_tag_minutes where batch_id = %(batch)s
group by device, tag, bucket order by device, tag, bucket
"""
_SERIES_FROM_READINGS = """
select device, tag, time_bucket(%(bucket)s::interval, time, %(origin)s) as bucket,
       count(*) as count,
       avg(value) filter (where quality = 'good') as mean,
       min(value) filter (where quality = 'good') as min,
       max(value) filter (where quality = 'good') as max
from readings where batch_id = %(batch)s and time >= %(start)s and time <= %(end)s
group by device, tag, bucket order by device, tag, bucket
"""


async def summaries(
    conn: AsyncConnection, batch_ids: list[str]
) -> dict[str, tuple[list[TagSummary], list[Excursion]]]:
    """Per batch: each tag's statistics and its excursions, for any number of batches in
    two statements (the first computes and keeps percentiles that are missing or stale; on
    a read-only session the second computes them without keeping them)."""
    sql = _SUMMARIES
    if writable(conn):
        await rollups.refresh_percentiles(conn, batch_ids)
    else:
        sql = _SUMMARIES_READ_ONLY
    cur = conn.cursor(row_factory=dict_row)
    out: dict[str, tuple[list[TagSummary], list[Excursion]]] = {}
    for r in await (await cur.execute(sql, (batch_ids,))).fetchall():
        tags, excursions = out.setdefault(r["batch_id"], ([], []))
        tags.append(TagSummary(**{k: r[k] for k in TagSummary.model_fields}))
        if r["below"] or r["above"]:
            excursions.append(
                Excursion(
                    device=r["device"],
                    tag=r["tag"],
                    low=r["low"],
                    high=r["high"],
                    below=r["below"],
                    above=r["above"],
                    min=r["excursion_min"],
                    max=r["excursion_max"],
                    first_time=r["excursion_first"],
                    last_time=r["excursion_last"],
                )
            )
    return out


async def batch_parameters(conn: AsyncConnection, batch: Batch, points: int = 0) -> BatchParameters:
    """Per-tag statistics and excursions; with points > 0 also a series downsampled to
    about that many points per tag (a chart's worth)."""
    tags, excursions = (await summaries(conn, [batch.batch_id])).get(batch.batch_id, ([], []))
    gone = await retention.dropped_before(conn)
    trimmed = gone is not None and bool(tags) and min(t.first_time for t in tags) < gone
    series: list[TagSeries] = []
    if points > 0 and tags:
        series = await _series(conn, batch.batch_id, tags, points, per_minute=trimmed)
    gaps = []
    if trimmed:
        assert gone is not None
        gaps.append(
            f"readings of batch {batch.batch_id} taken before {gone.isoformat()} were removed "
            "by readings retention (TRACE_READINGS_RETENTION_DAYS): its statistics, "
            "excursions and percentiles are the rollups kept at ingest, its series is per "
            "minute at the finest"
        )
    if not tags:
        gaps.append(f"batch {batch.batch_id} has no readings")
    if batch.started_at is None:
        gaps.append(f"batch {batch.batch_id} has no recorded start event")
    for t in tags:
        if t.good_count == 0:
            gaps.append(f"{t.device}/{t.tag} has no reading of good quality in this batch")
    return BatchParameters(batch=batch, tags=tags, excursions=excursions, series=series, gaps=gaps)


async def _series(
    conn: AsyncConnection,
    batch_id: str,
    tags: list[TagSummary],
    points: int,
    per_minute: bool = False,
) -> list[TagSeries]:
    """`per_minute`: from the per-minute rollup whatever the batch's length (its readings
    are gone, in part or whole)."""
    start = min(t.first_time for t in tags)
    end = max(t.last_time for t in tags)
    bucket = max((end - start).total_seconds() / points, 0.001)
    if per_minute:
        bucket = max(bucket, 60.0)
    sql, origin = _SERIES_FROM_READINGS, start
    if bucket >= 60:
        bucket, sql = 60.0 * math.ceil(bucket / 60), _SERIES_FROM_MINUTES
        origin = start.replace(second=0, microsecond=0)
    params = {
        "bucket": f"{bucket} seconds",
        "batch": batch_id,
        "start": start,
        "end": end,
        "origin": origin,
    }
    by_tag: dict[tuple[str, str], list[SeriesPoint]] = {}
    cur = await conn.execute(sql, params)  # type: ignore[arg-type]
    # Tens of thousands of points straight from the database: built, not validated.
    for device, tag, bucket_start, count, mean, low, high in await cur.fetchall():
        by_tag.setdefault((device, tag), []).append(
            SeriesPoint.model_construct(
                time=bucket_start, count=int(count), mean=mean, min=low, max=high
            )
        )
    return [TagSeries(device=d, tag=t, bucket_s=bucket, points=p) for (d, t), p in by_tag.items()]
