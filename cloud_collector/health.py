"""/healthz: the API, its database and this process's MQTT consumer, each said separately.

It needs no key and never waits long: the database is asked on the small pool the key
checks use (not the API's, which a burst of exports may have taken), at most `wait_s`.

- `down` (HTTP 503): the database does not answer. Nothing the API serves can be right
  then, and a load balancer should send requests elsewhere.
- `degraded` (HTTP 200): the API answers, but the consumer in this process has stopped, has
  lost its broker or its database, every connection of one of the API's pools is taken and
  requests wait, the read standby (TRACE_READ_DATABASE_URL) does not answer, or the last
  round of readings retention failed. Readings may be late; what the API answers is still
  what is committed.
- `ok` (HTTP 200).

A process that runs no consumer (an API-only collector) reports `consumer: null`; reads
served by the primary itself report `reads: null`; retention off reports `retention: null`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Literal

from psycopg_pool import AsyncConnectionPool

from cloud_collector.consumer import IngestCounters
from cloud_collector.retention import RetentionState
from protocols.strict import Strict


class PoolHealth(Strict):
    pool_max: int
    pool_size: int  # connections open
    pool_available: int  # open and idle
    requests_waiting: int  # requests waiting for one of them
    busy: bool  # every connection taken and requests waiting


class ApiHealth(PoolHealth):
    """The read pool (GET routes: where the load is), the write pool beside it; `busy` when
    either is."""

    key_lookups: int  # API key lookups in the database since start
    writes: PoolHealth


class ReadsHealth(Strict):
    """The read standby the GET routes use (TRACE_READ_DATABASE_URL)."""

    reachable: bool
    standby: bool | None  # in recovery (a standby); False: the URL names a primary
    # How far its data is behind the primary: 0 when it has replayed all it received, else
    # the time since the last transaction it replayed was committed.
    replay_delay_s: float | None
    error: str | None


class RetentionHealth(Strict):
    """Readings retention (cloud_collector/retention.py) as this process has run it."""

    keep_days: float
    last_run_at: datetime | None
    last_dropped_before: datetime | None  # chunks wholly before this were dropped
    chunks_dropped: int  # since this process started
    skipped_rounds: int  # rounds another collector of the group ran instead
    last_error: str | None


class DatabaseHealth(Strict):
    reachable: bool
    latency_ms: float | None
    error: str | None


class ConsumerHealth(Strict):
    running: bool
    broker_connected: bool
    database_connected: bool
    last_error: str | None
    last_message_at: datetime | None
    messages: int
    dead_letters: int


class Health(Strict):
    status: Literal["ok", "degraded", "down"]
    api: ApiHealth
    database: DatabaseHealth
    consumer: ConsumerHealth | None
    reads: ReadsHealth | None
    retention: RetentionHealth | None


# 0 when the standby has replayed everything it received; else since when it is behind.
_REPLAY_DELAY = """
select pg_is_in_recovery(),
       case when not pg_is_in_recovery()
              or pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() then 0
            else extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 end
"""


async def _reads(pool: AsyncConnectionPool | None, wait_s: float) -> ReadsHealth | None:
    if pool is None:
        return None
    try:
        async with asyncio.timeout(wait_s), pool.connection() as conn:
            row = await (await conn.execute(_REPLAY_DELAY)).fetchone()
    except TimeoutError:
        return ReadsHealth(
            reachable=False,
            standby=None,
            replay_delay_s=None,
            error=f"no answer within {wait_s:g} s",
        )
    except Exception as err:  # /healthz reports what it met; it never fails itself
        return ReadsHealth(
            reachable=False,
            standby=None,
            replay_delay_s=None,
            error=f"{type(err).__name__}: {err}"[:500],
        )
    assert row is not None
    return ReadsHealth(
        reachable=True, standby=bool(row[0]), replay_delay_s=round(float(row[1]), 3), error=None
    )


def _retention(state: RetentionState | None) -> RetentionHealth | None:
    if state is None:
        return None
    return RetentionHealth(
        keep_days=state.keep_days,
        last_run_at=state.last_run_at,
        last_dropped_before=state.last_dropped_before,
        chunks_dropped=state.chunks_dropped,
        skipped_rounds=state.skipped_rounds,
        last_error=state.last_error,
    )


async def _database(pool: AsyncConnectionPool, wait_s: float) -> DatabaseHealth:
    began = time.monotonic()
    try:
        async with asyncio.timeout(wait_s), pool.connection() as conn:
            await conn.execute("select 1")
    except TimeoutError:
        return DatabaseHealth(
            reachable=False, latency_ms=None, error=f"no answer within {wait_s:g} s"
        )
    except Exception as err:  # /healthz reports what it met; it never fails itself
        return DatabaseHealth(
            reachable=False, latency_ms=None, error=f"{type(err).__name__}: {err}"[:500]
        )
    return DatabaseHealth(
        reachable=True, latency_ms=round((time.monotonic() - began) * 1000, 1), error=None
    )


def _pool(pool: AsyncConnectionPool) -> PoolHealth:
    stats = pool.get_stats()
    available, waiting = stats.get("pool_available", 0), stats.get("requests_waiting", 0)
    return PoolHealth(
        pool_max=pool.max_size,
        pool_size=stats.get("pool_size", 0),
        pool_available=available,
        requests_waiting=waiting,
        busy=available == 0 and waiting > 0,
    )


def _api(
    read_pool: AsyncConnectionPool, write_pool: AsyncConnectionPool, key_lookups: int
) -> ApiHealth:
    reads, writes = _pool(read_pool), _pool(write_pool)
    return ApiHealth(
        **reads.model_dump(exclude={"busy"}),
        busy=reads.busy or writes.busy,
        key_lookups=key_lookups,
        writes=writes,
    )


def _consumer(ingest: IngestCounters | None) -> ConsumerHealth | None:
    if ingest is None:
        return None
    return ConsumerHealth(
        running=ingest.running,
        broker_connected=ingest.broker_connected,
        database_connected=ingest.database_connected,
        last_error=ingest.last_error,
        last_message_at=ingest.last_message_at,
        messages=ingest.messages,
        dead_letters=ingest.dead_letters,
    )


async def check(
    read_pool: AsyncConnectionPool,
    write_pool: AsyncConnectionPool,
    control_pool: AsyncConnectionPool,
    ingest: IngestCounters | None,
    key_lookups: int,
    read_control_pool: AsyncConnectionPool | None = None,
    retention: RetentionState | None = None,
    wait_s: float = 1.0,
) -> Health:
    database, reads = await asyncio.gather(
        _database(control_pool, wait_s), _reads(read_control_pool, wait_s)
    )
    api = _api(read_pool, write_pool, key_lookups)
    consumer = _consumer(ingest)
    status: Literal["ok", "degraded", "down"] = "ok"
    if not database.reachable:
        status = "down"
    elif (
        api.busy
        or (reads is not None and not reads.reachable)
        or (retention is not None and retention.last_error is not None)
        or (
            consumer is not None
            and not (consumer.running and consumer.broker_connected and consumer.database_connected)
        )
    ):
        status = "degraded"
    return Health(
        status=status,
        api=api,
        database=database,
        consumer=consumer,
        reads=reads,
        retention=_retention(retention),
    )
