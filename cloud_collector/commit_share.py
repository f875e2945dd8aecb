"""How many group commits a collector runs at once: its share of the database's.

Every lane of every collector commits its own groups, and each commit keeps a database
backend busy for its COPY and rollup upserts. More commits at once than the database has
cores do not commit more: each group gets smaller (it holds what arrived during the last
commit of its lane), every group upserts its tags' rollup rows whatever its size, and the
transactions wait for each other's stream and rollup rows. Measured on the 2-core bench
machine at 100 records a message: one collector of two lanes 0.69-0.70 x COPY; two
collectors of two lanes each 0.75-0.88 x what one committed; two of one lane each, the
same as one (0.70-0.71 x COPY).

So the collectors of a database split `ingest_database_commits` (set it near the
database's cores) between them: each holds a presence lock in the database (a session
advisory lock, gone with its connection when the collector dies or is cut off), counts
the presence locks every `RECOUNT_S`, and lets at most its share of its lanes commit at
once, one at least. A lane that waits for a turn keeps reading what arrives into its
forming group, so the commits it runs later are larger, not fewer readings.

The lanes stay as they are (an edge's messages always on the same connection, in
arrival order): only their turns to commit are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable

import psycopg

log = logging.getLogger(__name__)

RECOUNT_S = 1.0

# Two-key advisory locks (objsubid 2 in pg_locks) under a key of their own: the project's
# one-key locks (migrations, retention, recall cases) never collide with them.
_PRESENCE = 0x74726331  # "trc1"
_TAKE_PRESENCE = "select pg_try_advisory_lock(%s, %s)"
_COUNT_PRESENT = """
select count(*) from pg_locks
where locktype = 'advisory' and granted and objsubid = 2 and classid::bigint = %s
  and database = (select oid from pg_database where datname = current_database())
"""


def share(database_commits: int, lanes: int, collectors: int) -> int:
    """A collector's commits at once: its equal part of the database's, one at least (a
    collector that got none would stop), and never more than it has lanes."""
    return max(1, min(lanes, database_commits // max(1, collectors)))


class CommitTurns:
    """At most `size` of a collector's lanes commit at once; the others wait their turn,
    first come first served. The size may change at any time (`resize`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._changed = asyncio.Condition()

    async def resize(self, size: int) -> None:
        async with self._changed:
            self.size = size
            self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.busy < self.size)
            self.busy += 1
        try:
            yield
        finally:
            async with self._changed:
                self.busy -= 1
                self._changed.notify_all()


async def present(conn: psycopg.AsyncConnection) -> None:
    """Take this collector's presence lock on `conn` (autocommit; it holds the lock as long
    as it lives): a key no other collector holds."""
    for _ in range(64):
        key = random.randint(-(2**31), 2**31 - 1)
        cur = await conn.execute(_TAKE_PRESENCE, (_PRESENCE, key))
        row = await cur.fetchone()
        if row is not None and row[0]:
            return
    raise RuntimeError("no free presence key in 64 tries: pg_locks is full of them")


async def collectors_present(conn: psycopg.AsyncConnection) -> int:
    """The collectors committing into this database: their presence locks (this one's
    among them once it has taken it)."""
    cur = await conn.execute(_COUNT_PRESENT, (_PRESENCE,))
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def keep_share(
    conn: psycopg.AsyncConnection,
    turns: CommitTurns,
    database_commits: int,
    lanes: int,
    shared: Callable[[int, int], None],
) -> None:
    """Keep `turns` at this collector's share, counted on `conn` (which holds its presence
    lock), until cancelled; `shared(collectors, share)` hears of each change. A lost
    connection raises (the consumer restarts)."""
    seen = 0
    while True:
        collectors = await collectors_present(conn)
        if collectors != seen:
            size = share(database_commits, lanes, collectors)
            shared(collectors, size)
            log.info(
                "%d collector(s) commit into this database: %d of this one's %d lanes "
                "commit at once (TRACE_INGEST_DATABASE_COMMITS %d)",
                collectors,
                size,
                lanes,
                database_commits,
            )
            await turns.resize(size)
            seen = collectors
        await asyncio.sleep(RECOUNT_S)
