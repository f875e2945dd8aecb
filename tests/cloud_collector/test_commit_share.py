"""The collectors of a database share its commits (cloud_collector/commit_share.py): each
counts the collectors present in the database and lets at most its share of its lanes
commit at once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import psycopg
import pytest

from cloud_collector import commit_share
from cloud_collector.commit_share import CommitTurns, collectors_present, present, share
from cloud_collector.consumer import IngestCounters, run_consumer
from cloud_collector.settings import CollectorSettings
from tests.conftest import MosquittoProcess, Services, now_true, until


@pytest.mark.parametrize(
    ("database_commits", "lanes", "collectors", "expected"),
    [
        (2, 2, 1, 2),  # one collector alone: all its lanes
        (2, 2, 2, 1),  # two on a 2-core database: one each
        (2, 2, 3, 1),  # more collectors than commits: one each still, or they would stop
        (8, 2, 1, 2),  # never more than its lanes
        (8, 4, 3, 2),  # an equal part, rounded down
        (1, 16, 1, 1),
    ],
)
def test_a_collector_takes_its_equal_part_of_the_database_commits(
    database_commits: int, lanes: int, collectors: int, expected: int
) -> None:
    assert share(database_commits, lanes, collectors) == expected


async def test_no_more_lanes_commit_at_once_than_turns_and_a_larger_share_lets_one_in() -> None:
    turns = CommitTurns(1)
    inside: list[str] = []
    most = 0

    async def lane(name: str, hold: asyncio.Event) -> None:
        nonlocal most
        async with turns.turn():
            inside.append(name)
            most = max(most, len(inside))
            await hold.wait()
            inside.remove(name)

    holds = [asyncio.Event() for _ in range(3)]
    lanes = [asyncio.create_task(lane(f"lane-{n}", hold)) for n, hold in enumerate(holds)]
    await asyncio.sleep(0.01)
    assert inside == ["lane-0"]  # first come, first served
    await turns.resize(2)
    await asyncio.sleep(0.01)
    assert inside == ["lane-0", "lane-1"]
    await turns.resize(1)  # a turn taken stays taken; the next waits for two to end
    holds[0].set()
    await asyncio.sleep(0.01)
    assert inside == ["lane-1"]
    holds[1].set()
    await asyncio.sleep(0.01)
    assert inside == ["lane-2"]
    holds[2].set()
    await asyncio.gather(*lanes)
    assert most == 2 and turns.busy == 0


async def test_each_collector_present_is_counted_until_its_connection_ends(
    services: Services,
) -> None:
    async with await psycopg.AsyncConnection.connect(
        services.database_url, autocommit=True
    ) as counter:
        before = await collectors_present(counter)
        async with (
            await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as a,
            await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as b,
        ):
            await present(a)
            await present(b)
            assert await collectors_present(counter) == before + 2
            # A collector killed or cut off: its backend ends, and its presence with it.
            pid = b.info.backend_pid
            await counter.execute("select pg_terminate_backend(%s)", (pid,))
            await until(
                lambda: _count_is(counter, before + 1), 10, "the ended collector not counted"
            )
        assert await _count_is(counter, before)


async def _count_is(conn: psycopg.AsyncConnection, expected: int) -> bool:
    return await collectors_present(conn) == expected


async def test_a_running_collector_shrinks_its_share_when_another_comes_and_regrows_when_it_goes(
    collector_settings: CollectorSettings,
    private_broker: MosquittoProcess,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit_share, "RECOUNT_S", 0.1)
    settings = collector_settings.model_copy(
        update={
            "mqtt": private_broker.broker,  # no session of it left in the shared broker's group
            "collector_id": f"collector-share-{uuid.uuid4().hex[:6]}",
            "ingest_connections": 4,
            "ingest_database_commits": 4,
        }
    )
    async with await psycopg.AsyncConnection.connect(
        services.database_url, autocommit=True
    ) as other:
        others = await collectors_present(other)  # collectors of other tests, if any run
        counters = IngestCounters()
        ready = asyncio.Event()
        task = asyncio.create_task(run_consumer(settings, counters, ready))
        try:
            async with asyncio.timeout(10):
                await ready.wait()
            assert counters.collectors_committing == others + 1
            assert counters.commits_at_once == share(4, 4, others + 1)
            await present(other)  # another collector comes
            await until(
                lambda: now_true(counters.collectors_committing == others + 2), 10, "it counted"
            )
            assert counters.commits_at_once == share(4, 4, others + 2)
            await other.execute("select pg_advisory_unlock_all()")  # and goes
            await until(
                lambda: now_true(counters.collectors_committing == others + 1), 10, "it gone"
            )
            assert counters.commits_at_once == share(4, 4, others + 1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
