"""Read queries behind the HTTP API (SQL kept here, next to the code that runs it)."""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Batch(Strict):
    batch_id: str
    line_id: str
    edge_id: str
    started_at: datetime | None
    started_by: str | None
    ended_at: datetime | None
    ended_by: str | None


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
    excursions: list[Excursion] = []
    series: list[TagSeries] = []  # downsampled with time_bucket to about `points` per tag
    gaps: list[str]  # what makes this answer incomplete, in words


_BATCH = """
select batch_id, line_id, edge_id, started_at, started_by, ended_at, ended_by
from batches where batch_id = %s
"""
_LIST_BATCHES = """
select batch_id, line_id, edge_id, started_at, started_by, ended_at, ended_by
from batches order by coalesce(started_at, first_seen) desc limit %s
"""
# Units can change within a batch only if a profile changed mid-batch; the most frequent
# wins here and the count of distinct units is left to the later excursion work.
_PARAMETERS = """
select device, tag, mode() within group (order by unit) as unit,
       count(*) as count,
       count(*) filter (where quality = 'good' and value is not null) as good_count,
       count(*) filter (where quality = 'bad') as bad_count,
       count(*) filter (where quality = 'uncertain') as uncertain_count,
       min(value) filter (where quality = 'good') as min,
       max(value) filter (where quality = 'good') as max,
       avg(value) filter (where quality = 'good') as mean,
       percentile_cont(0.05) within group (order by value) filter (where quality = 'good')
           as p05,
       percentile_cont(0.5) within group (order by value) filter (where quality = 'good')
           as p50,
       percentile_cont(0.95) within group (order by value) filter (where quality = 'good')
           as p95,
       min(time) as first_time, max(time) as last_time
from readings where batch_id = %s
group by device, tag order by device, tag
"""


async def get_batch(conn: AsyncConnection, batch_id: str) -> Batch | None:
    cur = conn.cursor(row_factory=dict_row)
    row = await (await cur.execute(_BATCH, (batch_id,))).fetchone()
    return Batch(**row) if row else None


async def list_batches(conn: AsyncConnection, limit: int) -> list[Batch]:
    cur = conn.cursor(row_factory=dict_row)
    return [Batch(**row) for row in await (await cur.execute(_LIST_BATCHES, (limit,))).fetchall()]


_EXCURSIONS = """
select r.device, r.tag, s.low, s.high,
       count(*) filter (where r.value < s.low) as below,
       count(*) filter (where r.value > s.high) as above,
       min(r.value) as min, max(r.value) as max,
       min(r.time) as first_time, max(r.time) as last_time
from readings r join tag_specs s using (device, tag)
where r.batch_id = %s and r.quality = 'good' and (r.value < s.low or r.value > s.high)
group by r.device, r.tag, s.low, s.high order by r.device, r.tag
"""
# One bucket width for the whole batch, so that every tag's series lines up on a chart.
_SERIES = """
select device, tag, time_bucket(%(bucket)s::interval, time) as bucket, count(*) as count,
       avg(value) filter (where quality = 'good') as mean,
       min(value) filter (where quality = 'good') as min,
       max(value) filter (where quality = 'good') as max
from readings where batch_id = %(batch)s
group by device, tag, bucket order by device, tag, bucket
"""


async def batch_parameters(conn: AsyncConnection, batch: Batch, points: int = 0) -> BatchParameters:
    """Per-tag statistics and excursions; with points > 0 also a series downsampled to
    about that many points per tag (a chart's worth)."""
    cur = conn.cursor(row_factory=dict_row)
    rows = await (await cur.execute(_PARAMETERS, (batch.batch_id,))).fetchall()
    tags = [TagSummary(**row) for row in rows]
    excursions = [
        Excursion(**r) for r in await (await cur.execute(_EXCURSIONS, (batch.batch_id,))).fetchall()
    ]
    series: list[TagSeries] = []
    if points > 0 and tags:
        start = min(t.first_time for t in tags)
        span = (max(t.last_time for t in tags) - start).total_seconds()
        bucket = max(span / points, 0.001)
        by_tag: dict[tuple[str, str], list[SeriesPoint]] = {}
        params = {"bucket": f"{bucket} seconds", "batch": batch.batch_id}
        for r in await (await cur.execute(_SERIES, params)).fetchall():
            by_tag.setdefault((r["device"], r["tag"]), []).append(
                SeriesPoint(
                    time=r["bucket"], count=r["count"], mean=r["mean"], min=r["min"], max=r["max"]
                )
            )
        series = [
            TagSeries(device=d, tag=t, bucket_s=bucket, points=p) for (d, t), p in by_tag.items()
        ]
    gaps = []
    if not tags:
        gaps.append(f"batch {batch.batch_id} has no readings")
    if batch.started_at is None:
        gaps.append(f"batch {batch.batch_id} has no recorded start event")
    for t in tags:
        if t.good_count == 0:
            gaps.append(f"{t.device}/{t.tag} has no reading of good quality in this batch")
    return BatchParameters(batch=batch, tags=tags, excursions=excursions, series=series, gaps=gaps)
