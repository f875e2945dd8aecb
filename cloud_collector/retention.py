"""Readings retention: the chunks of the `readings` hypertable that lie wholly before
TRACE_READINGS_RETENTION_DAYS are dropped with TimescaleDB's `drop_chunks`, by the collector
on a schedule (the Apache edition built here has no policy jobs). Off unless set.

What goes and what stays (`readings` is the only hypertable):

- `readings` (hypertable, 1-day chunks): whole chunks older than the setting go.
- kept always, as traces and batch summaries answer from them: the rollups
  (`batch_tag_stats`, `batch_tag_percentiles`: each tag's statistics, excursions and
  percentiles; `batch_tag_minutes`: the per-minute series a batch's chart draws), `batches`
  and `batch_events`, the genealogy (`lots`, `lot_links`, `batch_inputs`, `batch_outputs`,
  `receipts`, `shipment_lines`), `trace_events`, `qc_results`; and what idempotence and
  the gaps of a trace need (`edge_streams`, `stream_commits`, `sequence_gaps`,
  `readings_dropped`).
- `dead_letters`: TRACE_DEAD_LETTER_RETENTION_DAYS (the consumer prunes them).

A round, on the primary:
1. One collector of a group at a time (an advisory lock; the others skip the round).
2. The batches with readings in the chunks about to go whose percentiles are missing or
   stale get them computed first, from every reading they still have: the rollups then
   carry everything a trace shows of them.
3. `drop_chunks` and a row in `readings_retention` (what went, when, by whom), in one
   transaction under a lock timeout: a long query reading those chunks makes the round
   wait and fail, never ingest.

Dropping a chunk removes its files at once: no row-by-row delete, no vacuum, no bloat.
A reading that arrives later with a time before the cut (a long edge outage) is stored in
a new chunk, counted in the rollups, and dropped at the next round.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import AsyncConnection

from cloud_collector import rollups

log = logging.getLogger(__name__)

_LOCK_KEY = 7_204_021  # shared by every collector of a database; not migrate's

_CUTOFF = "select now() - %s::float8 * interval '1 day'"
# The chunks drop_chunks would take: how many, and the end of the newest (before it,
# every reading goes).
_DOOMED = """
select count(*), max(c.range_end)
from show_chunks('readings', older_than => %(cutoff)s) s(chunk)
join timescaledb_information.chunks c
  on format('%%I.%%I', c.chunk_schema, c.chunk_name)::regclass = s.chunk
"""
# Batches with readings before `before` (still there: after `since`, the previous cut)
# whose percentiles are missing or stale.
_STALE_PERCENTILES = """
select distinct s.batch_id
from batch_tag_stats s left join batch_tag_percentiles p using (batch_id, device, tag)
where s.first_time < %(before)s
  and s.last_time >= coalesce(%(since)s, '-infinity'::timestamptz)
  and p.at_count is distinct from s.count
order by s.batch_id
"""
_DROP = "select count(*) from drop_chunks('readings', older_than => %(cutoff)s)"
_RECORD = """
insert into readings_retention (dropped_before, chunks, keep_days, collector)
values (%(before)s, %(chunks)s, %(keep_days)s, %(collector)s)
"""
# Every reading before this instant has been dropped (None: none ever was). Answers that
# read readings over a time range say so when the range reaches before it.
DROPPED_BEFORE = "select max(dropped_before) from readings_retention"

# A drop waits at most this long for a query that reads the chunks; then the round fails
# and the next one tries again.
LOCK_TIMEOUT = "10s"
_PERCENTILE_GROUP = 100  # batches per statement group


@dataclass(frozen=True)
class Round:
    """What one round did."""

    cutoff: datetime  # chunks wholly before this went
    chunks: int
    dropped_before: datetime | None  # the end of the newest chunk dropped
    percentiles_computed: int  # batches whose percentiles were computed first


@dataclass
class RetentionState:
    """This process's retention, as /healthz shows it."""

    keep_days: float
    last_run_at: datetime | None = None
    last_dropped_before: datetime | None = None
    chunks_dropped: int = 0
    skipped_rounds: int = 0  # another collector held the lock
    last_error: str | None = None


async def dropped_before(conn: AsyncConnection) -> datetime | None:
    """Every reading before this instant has been dropped by retention (None: none was)."""
    row = await (await conn.execute(DROPPED_BEFORE)).fetchone()
    return row[0] if row else None


async def run_once(conn: AsyncConnection, keep_days: float, collector: str) -> Round | None:
    """One round on `conn` (the primary, autocommit); None when another collector is
    running one."""
    row = await (await conn.execute("select pg_try_advisory_lock(%s)", (_LOCK_KEY,))).fetchone()
    if not (row and row[0]):
        return None
    try:
        cut = await (await conn.execute(_CUTOFF, (keep_days,))).fetchone()
        assert cut is not None
        cutoff: datetime = cut[0]
        doomed = await (await conn.execute(_DOOMED, {"cutoff": cutoff})).fetchone()
        if doomed is None or not doomed[0]:
            return Round(cutoff, 0, None, 0)
        before: datetime = doomed[1]
        since = await dropped_before(conn)
        stale = await conn.execute(_STALE_PERCENTILES, {"before": before, "since": since})
        batches = [r[0] for r in await stale.fetchall()]
        for i in range(0, len(batches), _PERCENTILE_GROUP):
            await rollups.refresh_percentiles(conn, batches[i : i + _PERCENTILE_GROUP])
        async with conn.transaction():
            await conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
            dropped = await (await conn.execute(_DROP, {"cutoff": cutoff})).fetchone()
            chunks = int(dropped[0]) if dropped else 0
            if chunks:
                await conn.execute(
                    _RECORD,
                    {
                        "before": before,
                        "chunks": chunks,
                        "keep_days": keep_days,
                        "collector": collector,
                    },
                )
        return Round(cutoff, chunks, before if chunks else None, len(batches))
    finally:
        await conn.execute("select pg_advisory_unlock(%s)", (_LOCK_KEY,))


async def keep_readings(
    database_url: str, keep_days: float, every_s: float, collector: str, state: RetentionState
) -> None:
    """The collector's background task: a round every `every_s`, the first at start. A
    database that is away, or a drop that waited too long, is retried at the next round
    (its error on /healthz until a round succeeds)."""
    while True:
        try:
            async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
                while True:
                    done = await run_once(conn, keep_days, collector)
                    state.last_run_at = datetime.now(UTC)
                    if done is None:
                        state.skipped_rounds += 1
                    else:
                        state.last_error = None
                        if done.chunks:
                            state.chunks_dropped += done.chunks
                            state.last_dropped_before = done.dropped_before
                            log.info(
                                "readings retention (%g days): dropped %d chunks, every reading "
                                "before %s (percentiles computed first for %d batches)",
                                keep_days,
                                done.chunks,
                                done.dropped_before,
                                done.percentiles_computed,
                            )
                    await asyncio.sleep(every_s)
        except psycopg.Error as err:
            state.last_error = f"{type(err).__name__}: {err}"[:500]
            log.warning("readings retention failed (%s); trying again in %gs", err, every_s)
            await asyncio.sleep(every_s)
