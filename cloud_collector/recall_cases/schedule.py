"""The collector's background task that keeps open recall cases current between reads, so
that a late event's members are found (and dated) within TRACE_RECALL_CASES_REFRESH_S of
arriving, not only when someone next looks. One collector of a group does each round (an
advisory lock); a case whose recomputation fails is named in the log and the others go on."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from psycopg import AsyncConnection

from cloud_collector.recall_cases.cases import UnknownCase, refresh

log = logging.getLogger(__name__)

_OPEN_CASES = "select case_id from recall_cases where closed_at is null order by case_id"
# One round at a time across the collectors of a database (a key of this task's own).
_ROUND_LOCK = "select pg_try_advisory_lock(hashtext('recall_cases.keep_current'))"
_ROUND_UNLOCK = "select pg_advisory_unlock(hashtext('recall_cases.keep_current'))"


async def refresh_open_cases(conn: AsyncConnection) -> int:
    """Recompute every open case once; how many were recomputed (none if another collector
    is doing a round)."""
    row = await (await conn.execute(_ROUND_LOCK)).fetchone()
    if not row or not row[0]:
        return 0
    done = 0
    try:
        for (case_id,) in await (await conn.execute(_OPEN_CASES)).fetchall():
            try:
                await refresh(conn, case_id)
                done += 1
            except UnknownCase:
                continue
            except psycopg.OperationalError:
                raise
            except psycopg.Error as err:
                log.error(
                    "recall case %s: its affected set could not be recomputed (%s): it stays "
                    "as last found; GET /api/v1/recall-cases/%s tries again",
                    case_id,
                    err,
                    case_id,
                )
    finally:
        await conn.execute(_ROUND_UNLOCK)
    return done


async def keep_cases_current(database_url: str, every_s: float) -> None:
    """Until cancelled: a round every `every_s`; a database away is retried next round."""
    while True:
        try:
            async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
                while True:
                    await refresh_open_cases(conn)
                    await asyncio.sleep(every_s)
        except psycopg.OperationalError as err:
            log.warning("recall cases: database unavailable (%s); retrying", err)
            await asyncio.sleep(every_s)
