"""Per-batch rollups of readings: counts, statistics, excursions and per-minute buckets per
batch, device and tag, added to in the statement that commits the readings (the Apache
edition of TimescaleDB has no continuous aggregates), and percentiles computed on demand
and kept until late readings make them stale.

`stats_from(source)` aggregates any relation with the readings' columns: the rows a commit
just inserted, or (`REBUILD`) every reading, for a database loaded in bulk.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import psycopg
from psycopg import AsyncConnection, Connection

log = logging.getLogger(__name__)

_GOOD = "r.quality = 'good' and r.value is not null"
GOOD = _GOOD  # what the statistics count, for queries that compute them live (alias `r`)
_OUT_OF_SPEC = f"{_GOOD} and (r.value < sp.low or r.value > sp.high)"

# Rows in (batch, device, tag) order: two collectors committing readings of one batch lock
# its rows in the same order and cannot deadlock.
_STATS_SELECT = f"""
select r.batch_id, r.device, r.tag, (array_agg(r.unit order by r.time desc))[1],
       count(*), count(*) filter (where {_GOOD}),
       count(*) filter (where r.quality = 'bad'), count(*) filter (where r.quality = 'uncertain'),
       min(r.value) filter (where {_GOOD}), max(r.value) filter (where {_GOOD}),
       coalesce(sum(r.value) filter (where {_GOOD}), 0), min(r.time), max(r.time),
       sp.low, sp.high,
       count(*) filter (where {_GOOD} and r.value < sp.low),
       count(*) filter (where {_GOOD} and r.value > sp.high),
       min(r.value) filter (where {_OUT_OF_SPEC}), max(r.value) filter (where {_OUT_OF_SPEC}),
       min(r.time) filter (where {_OUT_OF_SPEC}), max(r.time) filter (where {_OUT_OF_SPEC})
from {{source}} r left join tag_specs sp using (device, tag)
where r.batch_id is not null
group by r.batch_id, r.device, r.tag, sp.low, sp.high
order by r.batch_id, r.device, r.tag
"""
_STATS_UPSERT = """
insert into batch_tag_stats as s (batch_id, device, tag, unit, count, good_count, bad_count,
    uncertain_count, min, max, sum, first_time, last_time, low, high, below, above,
    excursion_min, excursion_max, excursion_first, excursion_last)
{select}
on conflict (batch_id, device, tag) do update set
    unit = case when excluded.last_time >= s.last_time then excluded.unit else s.unit end,
    count = s.count + excluded.count,
    good_count = s.good_count + excluded.good_count,
    bad_count = s.bad_count + excluded.bad_count,
    uncertain_count = s.uncertain_count + excluded.uncertain_count,
    min = least(s.min, excluded.min),
    max = greatest(s.max, excluded.max),
    sum = s.sum + excluded.sum,
    first_time = least(s.first_time, excluded.first_time),
    last_time = greatest(s.last_time, excluded.last_time),
    low = excluded.low,
    high = excluded.high,
    below = s.below + excluded.below,
    above = s.above + excluded.above,
    excursion_min = least(s.excursion_min, excluded.excursion_min),
    excursion_max = greatest(s.excursion_max, excluded.excursion_max),
    excursion_first = least(s.excursion_first, excluded.excursion_first),
    excursion_last = greatest(s.excursion_last, excluded.excursion_last)
"""
_MINUTES_UPSERT = f"""
insert into batch_tag_minutes as m (batch_id, device, tag, minute, count, good_count, sum,
    min, max)
select r.batch_id, r.device, r.tag, time_bucket('1 minute', r.time) as minute, count(*),
       count(*) filter (where {_GOOD}), coalesce(sum(r.value) filter (where {_GOOD}), 0),
       min(r.value) filter (where {_GOOD}), max(r.value) filter (where {_GOOD})
from {{source}} r where r.batch_id is not null
group by 1, 2, 3, 4 order by 1, 2, 3, 4
on conflict (batch_id, device, tag, minute) do update set
    count = m.count + excluded.count,
    good_count = m.good_count + excluded.good_count,
    sum = m.sum + excluded.sum,
    min = least(m.min, excluded.min),
    max = greatest(m.max, excluded.max)
"""


def stats_upsert(source: str) -> str:
    return _STATS_UPSERT.format(select=_STATS_SELECT.format(source=source))


def minutes_upsert(source: str) -> str:
    return _MINUTES_UPSERT.format(source=source)


# Every reading at once: for a database whose readings were loaded in bulk (the benchmark),
# or rollups lost and rebuilt.
REBUILD = [
    "truncate batch_tag_stats, batch_tag_minutes, batch_tag_percentiles",
    stats_upsert("readings"),
    minutes_upsert("readings"),
]

# Percentiles of every tag of the readings `where` selects, with the count they were
# computed at (every reading, whatever its quality, as batch_tag_stats counts them).
_PERCENTILES = f"""
insert into batch_tag_percentiles as p (batch_id, device, tag, at_count, p05, p50, p95)
select batch_id, device, tag, n, q[1], q[2], q[3] from (
    select r.batch_id, r.device, r.tag, count(*),
           percentile_cont(array[0.05, 0.5, 0.95]) within group (order by r.value)
               filter (where {_GOOD}) as q
    from readings r where r.batch_id is not null and {{where}}
    group by r.batch_id, r.device, r.tag
) t(batch_id, device, tag, n, q)
order by batch_id, device, tag
on conflict (batch_id, device, tag) do update set
    at_count = excluded.at_count, p05 = excluded.p05, p50 = excluded.p50, p95 = excluded.p95
"""
# Bounded by the batch's own first and last reading, as constants: only the chunks that
# hold the batch are planned and read.
_BATCH_PERCENTILES = _PERCENTILES.format(
    where="r.batch_id = %(batch)s and r.time >= %(first)s and r.time <= %(last)s"
)
# Without touching readings: which batches have tags whose percentiles are missing or stale.
_STALE = """
select s.batch_id, min(s.first_time), max(s.last_time)
from batch_tag_stats s left join batch_tag_percentiles p using (batch_id, device, tag)
where s.batch_id = any(%s) and p.at_count is distinct from s.count
group by s.batch_id
"""


async def refresh_percentiles(conn: AsyncConnection, batch_ids: list[str]) -> None:
    """Computes the percentiles of the batches whose tags have none or stale ones (when all
    are current: one statement over the rollups, none over readings)."""
    for batch, first, last in await (await conn.execute(_STALE, (batch_ids,))).fetchall():
        await conn.execute(_BATCH_PERCENTILES, {"batch": batch, "first": first, "last": last})


# Batches that ended a while ago (their last readings are in) with percentiles to compute.
_ENDED_AND_STALE = """
select distinct s.batch_id
from batches b join batch_tag_stats s using (batch_id)
left join batch_tag_percentiles p using (batch_id, device, tag)
where b.ended_at < now() - %(settle)s and b.ended_at > now() - interval '7 days'
  and p.at_count is distinct from s.count
limit 100
"""


async def refresh_ended(conn: AsyncConnection, settle: timedelta) -> list[str]:
    """Percentiles of the batches that ended at least `settle` ago, so that the first trace
    through a finished batch does not wait for them; returns the batches refreshed."""
    cur = await conn.execute(_ENDED_AND_STALE, {"settle": settle})
    batches = [r[0] for r in await cur.fetchall()]
    if batches:
        await refresh_percentiles(conn, batches)
    return batches


async def keep_percentiles(
    database_url: str,
    every: timedelta = timedelta(seconds=30),
    settle: timedelta = timedelta(seconds=30),
) -> None:
    """The collector's background task: refresh_ended every `every`. A database that is away
    is retried at the next round (ingest reports the outage; a trace recomputes what it
    finds stale itself)."""
    while True:
        try:
            async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
                while True:
                    if refreshed := await refresh_ended(conn, settle):
                        log.info("percentiles computed for %d ended batches", len(refreshed))
                    await asyncio.sleep(every.total_seconds())
        except psycopg.OperationalError as err:
            log.warning("percentiles of ended batches: database unavailable (%s); retrying", err)
            await asyncio.sleep(every.total_seconds())


_ENDED_PERCENTILES = _PERCENTILES.format(
    where="r.batch_id in (select batch_id from batches where ended_at is not null)"
)


def rebuild(conn: Connection) -> None:
    """Rollups from every reading, and the percentiles of the ended batches (what the
    collector would have kept while the readings arrived one message at a time)."""
    for statement in [*REBUILD, _ENDED_PERCENTILES]:
        conn.execute(statement)  # type: ignore[arg-type]
