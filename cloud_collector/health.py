"""/healthz: the API, its database and this process's MQTT consumer, each said separately.

It needs no key and never waits long: the database is asked on the small pool the key
checks use (not the API's, which a burst of exports may have taken), at most `wait_s`.

- `down` (HTTP 503): the database does not answer. Nothing the API serves can be right
  then, and a load balancer should send requests elsewhere.
- `degraded` (HTTP 200): the API answers, but the consumer in this process has stopped, has
  lost its broker or its database, or every connection of the API's pool is taken and
  requests wait. Readings may be late; what the API answers is still what is committed.
- `ok` (HTTP 200).

A process that runs no consumer (an API-only collector) reports `consumer: null`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Literal

from psycopg_pool import AsyncConnectionPool

from cloud_collector.consumer import IngestCounters
from protocols.strict import Strict


class ApiHealth(Strict):
    pool_max: int
    pool_size: int  # connections open
    pool_available: int  # open and idle
    requests_waiting: int  # requests waiting for one of them
    busy: bool  # every connection taken and requests waiting
    key_lookups: int  # API key lookups in the database since start


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


def _api(pool: AsyncConnectionPool, key_lookups: int) -> ApiHealth:
    stats = pool.get_stats()
    available, waiting = stats.get("pool_available", 0), stats.get("requests_waiting", 0)
    return ApiHealth(
        pool_max=pool.max_size,
        pool_size=stats.get("pool_size", 0),
        pool_available=available,
        requests_waiting=waiting,
        busy=available == 0 and waiting > 0,
        key_lookups=key_lookups,
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
    api_pool: AsyncConnectionPool,
    control_pool: AsyncConnectionPool,
    ingest: IngestCounters | None,
    key_lookups: int,
    wait_s: float = 1.0,
) -> Health:
    database = await _database(control_pool, wait_s)
    api = _api(api_pool, key_lookups)
    consumer = _consumer(ingest)
    status: Literal["ok", "degraded", "down"] = "ok"
    if not database.reachable:
        status = "down"
    elif api.busy or (
        consumer is not None
        and not (consumer.running and consumer.broker_connected and consumer.database_connected)
    ):
        status = "degraded"
    return Health(status=status, api=api, database=database, consumer=consumer)
