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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import AsyncConnection, Connection

from cloud_collector.binary_arrays import Float8s, Int8s, Texts, Timestamptzs
from cloud_collector.messages import FastReading

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
_STATS_COLUMNS = """batch_id, device, tag, unit, count, good_count, bad_count,
    uncertain_count, min, max, sum, first_time, last_time, low, high, below, above,
    excursion_min, excursion_max, excursion_first, excursion_last"""
# How a part adds to what is kept: the one rule for every way in (a statement over rows,
# or the parts group_commit.py computes of many messages at once).
_STATS_MERGE = """
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
_STATS_UPSERT = f"insert into batch_tag_stats as s ({_STATS_COLUMNS})\n{{select}}" + _STATS_MERGE
_MINUTES_COLUMNS = "batch_id, device, tag, minute, count, good_count, sum, min, max"
_MINUTES_MERGE = """
on conflict (batch_id, device, tag, minute) do update set
    count = m.count + excluded.count,
    good_count = m.good_count + excluded.good_count,
    sum = m.sum + excluded.sum,
    min = least(m.min, excluded.min),
    max = greatest(m.max, excluded.max)
"""
_MINUTES_SELECT = f"""
select r.batch_id, r.device, r.tag, time_bucket('1 minute', r.time) as minute, count(*),
       count(*) filter (where {_GOOD}), coalesce(sum(r.value) filter (where {_GOOD}), 0),
       min(r.value) filter (where {_GOOD}), max(r.value) filter (where {_GOOD})
from {{source}} r where r.batch_id is not null
group by 1, 2, 3, 4 order by 1, 2, 3, 4
"""
_MINUTES_UPSERT = (
    f"insert into batch_tag_minutes as m ({_MINUTES_COLUMNS})\n{_MINUTES_SELECT}" + _MINUTES_MERGE
)

# The parts of many messages, computed in Python (PartRollups), as arrays: in the same
# (batch, device, tag) order as the statements over rows, so collectors cannot deadlock.
STATS_PARTS_UPSERT = (
    f"insert into batch_tag_stats as s ({_STATS_COLUMNS})\n"
    "select * from unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int8[],"
    " %b::int8[], %b::int8[], %b::int8[], %b::float8[], %b::float8[], %b::float8[],"
    " %b::timestamptz[], %b::timestamptz[], %b::float8[], %b::float8[], %b::int8[],"
    " %b::int8[], %b::float8[], %b::float8[], %b::timestamptz[], %b::timestamptz[])"
    " order by 1, 2, 3" + _STATS_MERGE
)
MINUTES_PARTS_UPSERT = (
    f"insert into batch_tag_minutes as m ({_MINUTES_COLUMNS})\n"
    "select * from unnest(%b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::int8[],"
    " %b::int8[], %b::float8[], %b::float8[], %b::float8[]) order by 1, 2, 3, 4" + _MINUTES_MERGE
)


# The kinds of STATS_PARTS_UPSERT's and MINUTES_PARTS_UPSERT's columns, for
# binary_arrays.packed.
STATS_PARTS_KINDS = (
    *(Texts,) * 4,
    *(Int8s,) * 4,
    *(Float8s,) * 3,
    *(Timestamptzs,) * 2,
    *(Float8s,) * 2,
    *(Int8s,) * 2,
    *(Float8s,) * 2,
    *(Timestamptzs,) * 2,
)
MINUTES_PARTS_KINDS = (*(Texts,) * 3, Timestamptzs, *(Int8s,) * 2, *(Float8s,) * 3)

Key = tuple[str, str, str]  # batch, device, tag
_MINUTE = timedelta(minutes=1)


@dataclass(slots=True)
class _TagPart:
    first: datetime
    last: datetime
    unit: str | None  # of the latest reading (the later one on a tie)
    count: int = 0
    good: int = 0
    bad: int = 0
    uncertain: int = 0
    min: float | None = None
    max: float | None = None
    sum: float = 0.0
    # The minute bucket its last reading went to (most of a tag's readings go to the one
    # its reading before went to).
    minute: int = -1
    bucket: _MinutePart | None = None


@dataclass(slots=True)
class _MinutePart:
    count: int = 0
    good: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _greatest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class Parts:
    """The rollups of some readings, computed in Python as _STATS_SELECT and _MINUTES_SELECT
    compute them in SQL (same groups, counts, filters and 1-minute buckets), so that a
    group commit adds many messages to the rollups in two statements of a few rows (the
    messages added in order, as one upsert after another would add them). The
    excursions need the spec limits in force at commit: they are counted then
    (`stats_arrays`), from the readings of the tags whose minimum or maximum lies outside."""

    tags: dict[Key, _TagPart] = field(default_factory=dict)
    minutes: dict[tuple[Key, int], _MinutePart] = field(default_factory=dict)  # epoch minute
    sources: list[Sequence[FastReading]] = field(default_factory=list)

    def add(self, readings: Sequence[FastReading]) -> None:
        """Add the readings of one message, in its sequence order."""
        self.sources.append(readings)
        tags, minutes = self.tags, self.minutes
        # The minute of the last reading, as a window of its bounds: comparing times is a
        # fraction of what converting each one costs, and a message's times mostly ascend.
        # The bounds carry the reading's own tzinfo: datetimes that share one compare
        # without calling its utcoffset(), which costs more than the rest of the reading.
        window_start = window_end = None
        minute = 0
        last = None  # the time of the reading before (a poll's readings share one object)
        for r in readings:
            batch = r.batch
            if batch is None:
                continue
            time = r.time
            if time is not last:
                last = time
                if window_start is None or not window_start <= time < window_end:  # type: ignore[operator]
                    minute = int(time.timestamp()) // 60
                    window_start = datetime.fromtimestamp(minute * 60, time.tzinfo)
                    window_end = window_start + _MINUTE
            key = (batch, r.device, r.tag)
            part = tags.get(key)
            if part is None:
                part = tags[key] = _TagPart(time, time, r.unit)
            elif time >= part.last:
                part.last, part.unit = time, r.unit
            elif time < part.first:
                part.first = time
            part.count += 1
            bucket = part.bucket
            if part.minute != minute or bucket is None:
                bucket = minutes.get((key, minute))
                if bucket is None:
                    bucket = minutes[(key, minute)] = _MinutePart()
                part.minute, part.bucket = minute, bucket
            bucket.count += 1
            value = r.value
            quality = r.quality
            if quality == "good" and value is not None:
                part.good += 1
                part.sum += value
                if part.min is None or value < part.min:
                    part.min = value
                if part.max is None or value > part.max:
                    part.max = value
                bucket.good += 1
                bucket.sum += value
                if bucket.min is None or value < bucket.min:
                    bucket.min = value
                if bucket.max is None or value > bucket.max:
                    bucket.max = value
            elif quality == "bad":
                part.bad += 1
            elif quality == "uncertain":
                part.uncertain += 1

    def spec_keys(self) -> list[tuple[str, str]]:
        """The (device, tag) pairs whose spec limits the excursions need."""
        return sorted({(device, tag) for _, device, tag in self.tags})

    def stats_arrays(
        self, specs: dict[tuple[str, str], tuple[float | None, float | None]]
    ) -> list[list[object]]:
        """STATS_PARTS_UPSERT's parameters, with the excursions against `specs`."""
        columns: list[list[object]] = [[] for _ in range(21)]
        for key in sorted(self.tags):
            part = self.tags[key]
            low, high = specs.get((key[1], key[2]), (None, None))
            below = above = 0
            ex_min = ex_max = None
            ex_first: datetime | None = None
            ex_last: datetime | None = None
            if part.good and (
                (low is not None and part.min is not None and part.min < low)
                or (high is not None and part.max is not None and part.max > high)
            ):
                for readings in self.sources:
                    for r in readings:
                        value = r.value
                        if (
                            value is None
                            or r.batch != key[0]
                            or r.device != key[1]
                            or r.tag != key[2]
                            or r.quality != "good"
                        ):
                            continue
                        is_below = low is not None and value < low
                        is_above = high is not None and value > high
                        if not (is_below or is_above):
                            continue
                        below += is_below
                        above += is_above
                        ex_min, ex_max = _least(ex_min, value), _greatest(ex_max, value)
                        time = r.time
                        ex_first = time if ex_first is None else min(ex_first, time)
                        ex_last = time if ex_last is None else max(ex_last, time)
            row = (
                *key,
                part.unit,
                part.count,
                part.good,
                part.bad,
                part.uncertain,
                part.min,
                part.max,
                part.sum,
                part.first,
                part.last,
                low,
                high,
                below,
                above,
                ex_min,
                ex_max,
                ex_first,
                ex_last,
            )
            for column, cell in zip(columns, row, strict=True):
                column.append(cell)
        return columns

    def minutes_arrays(self) -> list[list[object]]:
        """MINUTES_PARTS_UPSERT's parameters."""
        columns: list[list[object]] = [[] for _ in range(9)]
        for key, minute in sorted(self.minutes):
            b = self.minutes[(key, minute)]
            start = datetime.fromtimestamp(minute * 60, UTC)
            row = (*key, start, b.count, b.good, b.sum, b.min, b.max)
            for column, cell in zip(columns, row, strict=True):
                column.append(cell)
        return columns


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
