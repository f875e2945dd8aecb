"""The group commit against the one-by-one path: the same messages, settled once in groups
(consumer.Flow.settle, as the running consumer does) and once one message at a time
(consumer.handle, the path every message took before), each under an edge of its own,
leave the same rows everywhere ingest writes and get the same acks.

A case is a list of groups, each a list of messages written as `stream first-last
[what@seq ...]` (see `_message`); times, values and names are made from the numbers, so
both paths get byte-identical payloads but for the edge's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiomqtt
import psycopg
import pytest

from cloud_collector import broker_identities, consumer, rollups
from cloud_collector.broker_identities import IdentityKind
from cloud_collector.consumer import Flow, IngestCounters, Taken, handle
from cloud_collector.group_commit import GroupCommit
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from protocols.mqtt.contract import Ack
from tests.conftest import Services, now_true, until

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
# Values in halves and spec limits that cut through them: sums are exact in any order.
SPEC_LOW, SPEC_HIGH = 2.0, 9.5

CASES: dict[str, list[list[str]]] = {
    "fresh": [["r 0-9", "r 10-19", "r 20-29"]],
    "fresh, out of order in the group": [["r 20-29", "r 0-9", "r 10-19"]],
    "resend of a committed message": [["r 0-9"], ["r 0-9", "r 10-19"]],
    "resend within one group": [["r 0-9", "r 10-19", "r 0-9"]],
    "overlap (regrouped after a reconnect)": [["r 0-9"], ["r 5-14", "r 15-24"]],
    "gap, then filled": [["r 0-9", "r 20-29"], ["r 10-19", "r 30-39"]],
    # Two collectors sharing an edge's messages: the later one often commits first.
    "later message first, then the one before it": [
        ["r 10-19"],
        ["r 0-9"],
        ["r 30-39"],
        ["r 20-29"],
    ],
    "a hole filled in parts, across groups": [
        ["r 0-9", "r 30-39"],
        ["r 20-24"],
        ["r 10-14", "r 25-29", "r 15-19"],
    ],
    "a hole filled twice in one group (a resend)": [["r 0-9", "r 20-29"], ["r 10-19", "r 10-19"]],
    "a late message across a hole and committed readings": [["r 0-9", "r 20-29"], ["r 5-14"]],
    "holes in two streams filled in one group": [
        ["r 0-9", "r 20-29", "x 10-19"],
        ["x 0-9", "r 10-19", "r 30-39"],
    ],
    "refusals mixed in": [["r 0-9", "r 10-19 nul@12 future@15", "r 20-29"]],
    "bad and uncertain readings": [["r 0-9 bad@3 uncertain@4", "r 10-19 bad@10"]],
    "times in local offsets, across minutes": [
        ["r 0-19 offset@2 offset@3 offset@9 offset@17", "r 20-29 offset@20 offset@29"]
    ],
    "recent readings (no backfill)": [["r 0-9 recent", "r 10-19 recent"]],
    "two streams interleaved": [
        ["r 0-9", "x 0-9", "r 10-19", "x 20-29", "x 10-19"],
        ["x 30-39", "r 20-29"],
    ],
    "two epochs of one stream": [["r 0-9", "r 0-9 epoch=e2", "r 10-19"]],
    "a poisoned message in the middle": [["r 0-9", "r 10-19 poison@14", "r 20-29"]],
    "garbage in the middle": [["r 0-9", "garbage", "r 10-19", "garbage"]],
    "spec limits sent ahead of readings": [["r 0-9", "e 0-0 specs", "r 10-19", "r 20-29"]],
    "events between readings": [["e 0-0 start", "r 0-9", "e 1-1 end", "r 10-19"]],
    "an invalid readings message": [["r 0-9", "r 10-19 noseq@11", "r 20-29"]],
}

# The group's transaction fails on the poisoned row, and ingest finds it one by one.
FALLS_BACK_WHOLE = {"a poisoned message in the middle"}

STREAMS = {"r": "readings", "x": "readings-b", "e": "events"}


# "Recent" readings are dated from one clock reading per test, so that both paths get the
# same ones however long the first takes.
_recent: dict[str, datetime] = {}


@pytest.fixture(autouse=True)
def _recent_base() -> None:
    _recent["base"] = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=90)


def _reading(edge: str, seq: int, flags: dict[int, str], recent: bool) -> dict[str, Any]:
    base = _recent["base"] if recent else T0
    tag = f"t{seq % 3}"
    record: dict[str, Any] = {
        "kind": "reading",
        "seq": seq,
        "time": (base + timedelta(seconds=7 * seq)).isoformat(),
        "line": "line-1",
        "batch": f"{edge}-B{seq // 25}",
        "device": f"{edge}-dev",
        "tag": tag,
        "value": seq * 0.5,
        "unit": "Cel" if seq % 7 else "degC",
    }
    match flags.get(seq):
        case "nul":
            record["batch"] = "bad\u0000batch"
        case "future":
            record["time"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        case "poison":
            record["tag"] = "poison"
        case "bad":
            record.update(value=None, quality="bad", detail="sensor open")
        case "uncertain":
            record.update(quality="uncertain")
        case "noseq":
            del record["time"]
        case "offset":  # the same instant, written in a local offset
            local = timezone(timedelta(hours=5, minutes=45))
            record["time"] = (base + timedelta(seconds=7 * seq)).astimezone(local).isoformat()
    return record


def _event(edge: str, seq: int, what: str) -> dict[str, Any]:
    time = (T0 + timedelta(seconds=7 * seq)).isoformat()
    if what == "specs":
        specs = [
            {
                "device": f"{edge}-dev",
                "tag": "t1",
                "unit": "Cel",
                "low": SPEC_LOW,
                "high": SPEC_HIGH,
            }
        ]
        return {"kind": "tag_specs", "seq": seq, "time": time, "specs": specs}
    kind = "batch_started" if what == "start" else "batch_ended"
    return {
        "kind": kind,
        "seq": seq,
        "time": time,
        "line": "line-1",
        "batch": f"{edge}-B0",
        "by": "op",
    }


def _message(edge: str, text: str, mid: int) -> aiomqtt.Message:
    """`r 0-9` (readings 0..9 of stream "readings"; `x`: of "readings-b"), `e 0-0 specs`
    (an event), `garbage`; then flags: `nul@N`, `future@N`, `poison@N`, `bad@N`,
    `uncertain@N`, `noseq@N`, `offset@N` (the record at N), `recent`, `epoch=E`."""
    if text == "garbage":
        topic, payload = topics.data(edge, "readings"), b"\x00\xffnot json"
    else:
        kind, numbers, *flags = text.split()
        first, last = (int(n) for n in numbers.split("-"))
        marks = {int(f.split("@")[1]): f.split("@")[0] for f in flags if "@" in f}
        epoch = next((f.split("=")[1] for f in flags if f.startswith("epoch=")), "e1")
        if kind == "e":
            records = [_event(edge, seq, flags[0]) for seq in range(first, last + 1)]
        else:
            records = [
                _reading(edge, seq, marks, "recent" in flags) for seq in range(first, last + 1)
            ]
        stream = STREAMS[kind]
        body = {"edge_id": edge, "stream": stream, "epoch": epoch, "records": records}
        topic, payload = topics.data(edge, stream), json.dumps(body).encode()
    return aiomqtt.Message(topic, payload, qos=1, retain=False, mid=mid, properties=None)


@pytest.fixture
async def conn(services: Services) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        await c.execute(
            """create or replace function poisoned_reading() returns trigger language plpgsql
            as $$ begin raise exception 'poisoned reading %', new.seq; end $$"""
        )
        await c.execute(
            "create or replace trigger poisoned_reading before insert on readings for each row"
            " when (new.tag = 'poison') execute function poisoned_reading()"
        )
        try:
            yield c
        finally:
            await c.execute("drop trigger poisoned_reading on readings")


async def _new_edge(conn: psycopg.AsyncConnection) -> str:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    await broker_identities.issue(conn, edge, IdentityKind.edge, "test_group_commit")
    return edge


# Everything ingest writes, of one edge, with its name replaced by EDGE.
SNAPSHOT = {
    "streams": "select stream, epoch, high_water, high_water_time from edge_streams"
    " where edge_id = %(edge)s",
    "commits": "select s.stream, s.epoch, c.first_seq, c.last_seq, c.records, c.inserted"
    " from stream_commits c join edge_streams s using (stream_id) where s.edge_id = %(edge)s",
    "gaps": "select s.stream, s.epoch, g.first_missing, g.last_missing, g.before_time,"
    " g.after_time from sequence_gaps g join edge_streams s using (stream_id)"
    " where s.edge_id = %(edge)s",
    "readings": "select s.stream, s.epoch, r.seq, r.time, r.device_time, r.line_id, r.batch_id,"
    " r.device, r.tag, r.value, r.unit, r.quality, r.detail, r.backfill from readings r"
    " join edge_streams s using (stream_id) where s.edge_id = %(edge)s",
    "batches": "select batch_id, line_id, edge_id, started_at, started_by, ended_at, ended_by"
    " from batches where batch_id like %(like)s",
    "stats": "select * from batch_tag_stats where batch_id like %(like)s",
    "minutes": "select * from batch_tag_minutes where batch_id like %(like)s",
    "batch_events": "select e.seq, e.kind, e.batch_id from batch_events e"
    " join edge_streams s using (stream_id) where s.edge_id = %(edge)s",
    "specs": "select device, tag, unit, low, high from tag_specs where device like %(like)s",
    "dead_letters": "select topic, stream, epoch, first_seq, last_seq, refused, reason, repeats"
    " from dead_letters where topic like %(like_topic)s",
}


def _normal(value: object, edge: str) -> object:
    if isinstance(value, str):
        return value.replace(edge, "EDGE")
    return value


async def _snapshot(conn: psycopg.AsyncConnection, edge: str) -> dict[str, list[tuple]]:
    params = {"edge": edge, "like": f"{edge}%", "like_topic": f"%/{edge}/%"}
    state = {}
    for name, sql in SNAPSHOT.items():
        rows = await (await conn.execute(sql, params)).fetchall()
        state[name] = sorted((tuple(_normal(v, edge) for v in row) for row in rows), key=repr)
    return state


def _acks(acks: list[Ack], edge: str) -> list[tuple]:
    return sorted(
        (
            (
                a.stream,
                a.epoch,
                a.first_seq,
                a.last_seq,
                a.duplicate,
                _normal(a.refused, edge),
                *((r.first_seq, r.last_seq, _normal(r.reason, edge)) for r in a.refusals),
            )
            for a in acks
        ),
        key=repr,
    )


async def _one_by_one(
    conn: psycopg.AsyncConnection, settings: CollectorSettings, groups: list[list[str]]
) -> tuple[str, list[Ack], IngestCounters]:
    edge = await _new_edge(conn)
    acks: list[Ack] = []

    async def send(ack: Ack) -> None:
        acks.append(ack)

    counters = IngestCounters()
    for n, text in enumerate(text for group in groups for text in group):
        await handle(conn, send, _message(edge, text, n + 1), counters, settings)
    return edge, acks, counters


async def _grouped(
    conn: psycopg.AsyncConnection, settings: CollectorSettings, groups: list[list[str]]
) -> tuple[str, list[Ack], IngestCounters, list[int]]:
    edge = await _new_edge(conn)
    acks: list[Ack] = []
    released: list[int] = []

    async def send(ack: Ack) -> None:
        acks.append(ack)

    counters = IngestCounters()
    flow = Flow(conn, settings, counters, send, lambda m: released.append(m.mid))
    mid = 0
    for group in groups:
        messages = []
        for text in group:
            mid += 1
            messages.append(_message(edge, text, mid))
        parts = rollups.Parts()  # the group's rollups, as the consumer's grouper keeps them
        await flow.settle([flow.read(m, parts) for m in messages])
    return edge, acks, counters, released


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_the_group_commit_leaves_what_one_by_one_leaves(
    conn: psycopg.AsyncConnection, collector_settings: CollectorSettings, case: str
) -> None:
    groups = CASES[case]
    alone, alone_acks, alone_counters = await _one_by_one(conn, collector_settings, groups)
    grouped, grouped_acks, counters, released = await _grouped(conn, collector_settings, groups)

    assert _acks(grouped_acks, grouped) == _acks(alone_acks, alone)
    assert await _snapshot(conn, grouped) == await _snapshot(conn, alone)
    for name in ("messages", "rows_inserted", "duplicates", "dead_letters", "refused_records"):
        assert getattr(counters, name) == getattr(alone_counters, name), name
    # Every message is released to the broker exactly once, whichever way it went.
    assert sorted(released) == list(range(1, sum(len(g) for g in groups) + 1))
    # The group commit took part, but where its transaction failed and all went one by one.
    assert (counters.grouped > 0) != (case in FALLS_BACK_WHOLE)
    snapshot = await _snapshot(conn, grouped)
    assert snapshot["readings"], "the case commits readings"


@pytest.mark.parametrize(
    ("groups", "grouped"),
    [
        ([["r 10-19"], ["r 0-9"], ["r 30-39"], ["r 20-29"]], 4),
        ([["r 0-9", "r 30-39"], ["r 20-24"], ["r 10-14", "r 25-29", "r 15-19"]], 6),
        ([["r 0-9", "r 20-29"], ["r 10-19", "r 10-19"]], 3),  # the resend: one by one
        ([["r 0-9", "r 20-29"], ["r 5-14"]], 2),  # reaches committed readings: one by one
    ],
)
async def test_a_message_filling_a_hole_is_committed_with_its_group(
    conn: psycopg.AsyncConnection,
    collector_settings: CollectorSettings,
    groups: list[list[str]],
    grouped: int,
) -> None:
    _, acks, counters, _ = await _grouped(conn, collector_settings, groups)
    assert counters.grouped == grouped
    assert len(acks) == sum(len(g) for g in groups)


async def test_a_group_of_fresh_messages_is_one_transaction(
    conn: psycopg.AsyncConnection, collector_settings: CollectorSettings
) -> None:
    groups = [["r 0-9", "x 0-9", "r 10-19", "x 10-19", "r 20-29"]]
    _, acks, counters, _ = await _grouped(conn, collector_settings, groups)
    assert (counters.groups, counters.grouped, len(acks)) == (1, 5, 5)
    assert not any(a.duplicate or a.refused for a in acks)


async def test_the_excursions_are_counted_against_the_limits_in_force(
    conn: psycopg.AsyncConnection, collector_settings: CollectorSettings
) -> None:
    """Spec limits t1 2.0..9.5, t1 readings at seq 1, 4, 7, ..., values seq / 2."""
    edge, _, _, _ = await _grouped(conn, collector_settings, [["e 0-0 specs"], ["r 0-24"]])
    row = await (
        await conn.execute(
            "select count, good_count, below, above, excursion_min, excursion_max, low, high"
            " from batch_tag_stats where batch_id = %s and tag = 't1'",
            (f"{edge}-B0",),
        )
    ).fetchone()
    t1 = [seq * 0.5 for seq in range(25) if seq % 3 == 1]
    below = [v for v in t1 if v < SPEC_LOW]
    above = [v for v in t1 if v > SPEC_HIGH]
    assert row == (
        len(t1),
        len(t1),
        len(below),
        len(above),
        min(below + above),
        max(below + above),
        SPEC_LOW,
        SPEC_HIGH,
    )


async def test_a_deadlock_is_tried_again_not_taken_for_the_messages_fault(
    conn: psycopg.AsyncConnection,
    collector_settings: CollectorSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two collectors racing for a batch's rollup rows: the database rolls one back, and
    that one commits its group again (not one by one, and not by a restart)."""
    real = GroupCommit._commit
    calls = 0

    async def deadlocked_once(self: GroupCommit, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected (injected)")
        return await real(self, *args)

    monkeypatch.setattr(GroupCommit, "_commit", deadlocked_once)
    _, acks, counters, _ = await _grouped(conn, collector_settings, [["r 0-9", "r 10-19"]])
    assert calls == 2
    assert (counters.groups, counters.grouped) == (1, 2)
    assert [(a.first_seq, a.refused) for a in sorted(acks, key=lambda a: a.first_seq)] == [
        (0, None),
        (10, None),
    ]


async def test_a_group_overtaken_between_its_copy_and_its_locks_is_classified_again(
    conn: psycopg.AsyncConnection,
    collector_settings: CollectorSettings,
    services: Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The group writes its readings before it locks its streams. Another collector that
    commits meanwhile what makes a message of the group not fresh (here: readings 10-15 of
    the stream committed as refused, the mark moved to 15) is found under the locks: the
    group's rows go back, the message is classified again and settled one by one against
    what is committed (which writes the readings it does not find). Nothing doubled."""
    edge = await _new_edge(conn)
    acks: list[Ack] = []

    async def send(ack: Ack) -> None:
        acks.append(ack)

    caplog.set_level(logging.INFO, logger="cloud_collector.group_commit")
    counters = IngestCounters()
    flow = Flow(conn, collector_settings, counters, send, lambda m: None)
    await flow.settle([flow.read(_message(edge, "r 0-9", 1))])
    row = await (
        await conn.execute(
            "select stream_id from edge_streams where edge_id = %s and stream = 'readings'",
            (edge,),
        )
    ).fetchone()
    assert row is not None
    stream_id = row[0]

    async def waiting_for_the_stream() -> bool:
        cur = await conn_watch.execute(
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
            " and query like %s",
            ("%edge_streams%for update%",),
        )
        found = await cur.fetchone()
        return bool(found and found[0])

    async with (
        await psycopg.AsyncConnection.connect(services.database_url) as other,
        await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as conn_watch,
    ):
        await other.execute(
            "select 1 from edge_streams where stream_id = %s for update", (stream_id,)
        )
        settling = asyncio.create_task(flow.settle([flow.read(_message(edge, "r 10-19", 2))]))
        await until(waiting_for_the_stream, 15, "the group waiting for its stream's lock")
        await other.execute(
            "update edge_streams set high_water = 15 where stream_id = %s", (stream_id,)
        )
        await other.execute(
            "insert into stream_commits (stream_id, first_seq, last_seq, records, inserted)"
            " values (%s, 10, 15, 6, 0)",
            (stream_id,),
        )
        await other.commit()
        async with asyncio.timeout(30):
            await settling

    cur = await conn.execute(
        "select seq from readings where stream_id = %s order by seq", (stream_id,)
    )
    assert [r[0] for r in await cur.fetchall()] == list(range(20))
    assert [(a.first_seq, a.last_seq) for a in acks] == [(0, 9), (10, 19)]
    assert counters.grouped == 1  # the first message; the second went one by one
    assert any("overtaken" in r.getMessage() for r in caplog.records)


async def _until_read(flow: Flow, arrived: asyncio.Queue[aiomqtt.Message]) -> None:
    """Until the grouper has read everything that arrived (it reads a message taken from
    the queue before it yields)."""
    for _ in range(1000):
        if arrived.empty():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the grouper did not read what arrived ({flow._forming})")


@contextlib.asynccontextmanager
async def _grouping(
    settings: CollectorSettings,
    conn: psycopg.AsyncConnection | None = None,
    turn: int | None = None,
) -> AsyncIterator[tuple[Flow, asyncio.Queue[aiomqtt.Message]]]:
    flow = Flow(conn, settings, IngestCounters(), _no_ack, lambda m: None, turn)  # type: ignore[arg-type]
    arrived: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    grouper = asyncio.create_task(flow.group(arrived))
    try:
        yield flow, arrived
    finally:
        grouper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await grouper


@contextlib.asynccontextmanager
async def _committing(
    flow: Flow, settle: Callable[[list[Taken]], Awaitable[None]]
) -> AsyncIterator[None]:
    """`flow`'s committer running, with `settle` in place of the database work."""
    flow.settle = settle  # type: ignore[method-assign]
    committer = asyncio.create_task(flow.commit())
    try:
        yield
    finally:
        committer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await committer


async def _no_ack(ack: Ack) -> None:
    raise AssertionError("nothing is committed here")


def _mids(group: list[Taken]) -> list[int]:
    return [t.message.mid for t in group]


async def test_a_group_holds_everything_that_arrived_while_the_one_before_it_committed(
    collector_settings: CollectorSettings,
) -> None:
    settings = collector_settings.model_copy(update={"ingest_group_linger_s": 0.0})
    async with _grouping(settings) as (flow, arrived):
        arrived.put_nowait(_message("edge-g", "r 0-9", 1))
        first = await flow.next_group()
        # The committer is busy with `first`: what arrives meanwhile forms the next group,
        # however it trickles in.
        for mid in range(2, 7):
            arrived.put_nowait(_message("edge-g", f"r {mid * 10}-{mid * 10 + 9}", mid))
            await asyncio.sleep(0.01)
        await _until_read(flow, arrived)
        assert (_mids(first), _mids(await flow.next_group())) == ([1], [2, 3, 4, 5, 6])


async def test_a_full_group_waits_for_the_committer_and_the_rest_waits_in_the_queue(
    collector_settings: CollectorSettings,
) -> None:
    settings = collector_settings.model_copy(
        update={"ingest_group_linger_s": 0.0, "ingest_group_messages": 2}
    )
    async with _grouping(settings) as (flow, arrived):
        for mid in range(1, 6):
            arrived.put_nowait(_message("edge-g", f"r {mid * 10}-{mid * 10 + 9}", mid))
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(flow._forming.taken) == 2 and arrived.qsize() == 2  # one in the grouper's hand
        groups = []
        for _ in range(3):
            groups.append(_mids(await flow.next_group()))
            await asyncio.sleep(0.01)  # committing it, while the grouper reads on
        assert groups == [[1, 2], [3, 4], [5]]


async def test_an_idle_committer_waits_the_linger_after_the_first_message_for_more(
    collector_settings: CollectorSettings,
) -> None:
    settings = collector_settings.model_copy(update={"ingest_group_linger_s": 0.3})
    async with _grouping(settings) as (flow, arrived):
        waiting = asyncio.create_task(flow.next_group())
        arrived.put_nowait(_message("edge-g", "r 0-9", 1))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        arrived.put_nowait(_message("edge-g", "r 10-19", 2))
        assert _mids(await asyncio.wait_for(waiting, 2)) == [1, 2]


# The turns below are numbers no running collector of the test database uses (the session's
# collector commits on lanes 0 and 1), so that its commits never wait for these tests.


async def test_a_lane_waiting_for_its_turn_to_commit_takes_everything_that_arrived_meanwhile(
    collector_settings: CollectorSettings, services: Services
) -> None:
    """The lane of the same number in another collector is committing (it holds the turn):
    this lane's group goes on growing, and is taken whole when the turn comes."""
    settings = collector_settings.model_copy(update={"ingest_group_linger_s": 0.0})
    settled: list[list[int]] = []

    async def settle(group: list[Taken]) -> None:
        settled.append(_mids(group))

    url = services.database_url
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as lane_conn,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as other,
        _grouping(settings, lane_conn, turn=7) as (flow, arrived),
    ):
        await other.execute(consumer._TAKE_TURN, (consumer._TURNS, 7))
        async with _committing(flow, settle):
            for mid in range(1, 5):
                arrived.put_nowait(_message("edge-g", f"r {mid * 10}-{mid * 10 + 9}", mid))
                await asyncio.sleep(0.02)
            await _until_read(flow, arrived)
            assert settled == [] and _mids(flow._forming.taken) == [1, 2, 3, 4]
            await other.execute(consumer._END_TURN, (consumer._TURNS, 7))
            await until(lambda: now_true(settled == [[1, 2, 3, 4]]), 5, "settled at its turn")


@pytest.mark.parametrize(("turns", "most_at_once"), [((3, 3), 1), ((3, 4), 2)])
async def test_lanes_of_one_number_commit_one_at_a_time_in_the_database_and_others_side_by_side(
    collector_settings: CollectorSettings,
    services: Services,
    turns: tuple[int, int],
    most_at_once: int,
) -> None:
    """Two collectors' lanes (connections of their own): of the same number they take
    turns, however their groups come; of different numbers they commit together."""
    settings = collector_settings.model_copy(update={"ingest_group_linger_s": 0.0})
    committing: set[int] = set()
    most = 0
    settled = 0

    def settle_as(lane: int) -> Callable[[list[Taken]], Awaitable[None]]:
        async def settle(group: list[Taken]) -> None:
            nonlocal most, settled
            committing.add(lane)
            most = max(most, len(committing))
            await asyncio.sleep(0.05)
            committing.discard(lane)
            settled += len(group)

        return settle

    url = services.database_url
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn_a,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn_b,
        _grouping(settings, conn_a, turn=turns[0]) as (flow_a, arrived_a),
        _grouping(settings, conn_b, turn=turns[1]) as (flow_b, arrived_b),
        _committing(flow_a, settle_as(0)),
        _committing(flow_b, settle_as(1)),
    ):
        for mid in range(1, 21):
            arrived = arrived_a if mid % 2 else arrived_b
            arrived.put_nowait(_message("edge-g", f"r {mid * 10}-{mid * 10 + 9}", mid))
            await asyncio.sleep(0.01)
        await until(lambda: now_true(settled == 20), 10, "every message settled")
    assert most == most_at_once
