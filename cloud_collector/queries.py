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
    first_time: datetime
    last_time: datetime


class BatchParameters(Strict):
    batch: Batch
    tags: list[TagSummary]
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


async def batch_parameters(conn: AsyncConnection, batch: Batch) -> BatchParameters:
    cur = conn.cursor(row_factory=dict_row)
    rows = await (await cur.execute(_PARAMETERS, (batch.batch_id,))).fetchall()
    tags = [TagSummary(**row) for row in rows]
    gaps = []
    if not tags:
        gaps.append(f"batch {batch.batch_id} has no readings")
    if batch.started_at is None:
        gaps.append(f"batch {batch.batch_id} has no recorded start event")
    for t in tags:
        if t.good_count == 0:
            gaps.append(f"{t.device}/{t.tag} has no reading of good quality in this batch")
    return BatchParameters(batch=batch, tags=tags, gaps=gaps)
