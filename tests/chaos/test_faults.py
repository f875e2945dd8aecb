"""The fleet under faults: each scenario runs real edge agent and collector processes on
counting devices, injects its fault, recovers, and reconciles the database row for row with
what the devices served (tests/chaos/reconcile.py): nothing missing, nothing doubled, and
every gap explained by a record the system wrote. The recovery time (the fault's end to
everything committed, explanations included) is printed in the run's summary.

The scenarios ask for behaviour only (what arrives, what is explained, what stays up), not
for how the collector commits or how collectors share the subscription.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import psycopg

from cloud_collector.broker_identities import IdentityKind
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from tests.chaos.fleet import Fleet, record
from tests.chaos.world import COUNTER, LINE, CollectorProcess, EdgeProcess, PostgresCluster
from tests.conftest import broker_accepts, until

# ---- 1. SIGKILL a collector mid-transaction -------------------------------------------------

# Whatever way a collector commits, it locks its edges' stream rows or writes readings:
# held here, either makes its transaction wait, open, until the kill.
_HOLD_STREAMS = "select 1 from edge_streams where edge_id = any(%s) for update"
_HOLD_READINGS = "lock table readings in share mode"
# Not a lane waiting for its turn to commit (an advisory lock, outside its transactions):
# collectors take turns per lane number, and the one killed is one whose turn it was.
_WAITING_IN_TRANSACTION = """
select application_name, pid, backend_xid::text, wait_event_type from pg_stat_activity
where application_name = any(%s) and xact_start is not null and wait_event_type = 'Lock'
  and wait_event <> 'advisory'
order by backend_start
limit 1
"""


async def _hold(holder: psycopg.AsyncConnection[Any], edge_ids: list[str]) -> None:
    """Take both holds. A collector transaction that has written readings and then waits for
    a stream row the holder took closes a cycle with the holder's readings lock; PostgreSQL
    then cancels one side, sometimes the holder: roll back and take both again (the
    collector's transaction has ended by then, committed or rolled back)."""
    for attempt in itertools.count(1):
        try:
            await holder.execute(_HOLD_STREAMS, (edge_ids,))
            await holder.execute(_HOLD_READINGS)
            return
        except psycopg.errors.DeadlockDetected:
            await holder.rollback()
            if attempt == 5:
                raise


async def _kill_mid_transaction(
    fleet: Fleet, living: list[CollectorProcess]
) -> tuple[CollectorProcess, str]:
    """SIGKILL one of the `living` while one of its database transactions is open: the
    fleet's stream rows and the readings table are held by a transaction of the test, so
    ingest waits inside its own, and the kill lands there. Returns the one killed and what
    was seen of the transaction (and how it ended)."""
    async with await psycopg.AsyncConnection.connect(fleet.database_url) as holder:
        await _hold(holder, fleet.edge_ids)
        async with await psycopg.AsyncConnection.connect(
            fleet.database_url, autocommit=True
        ) as watcher:
            names = {f"chaos-{c.name}": c for c in living}

            async def open_transaction() -> tuple[str, int, str | None, str | None] | None:
                cur = await watcher.execute(_WAITING_IN_TRANSACTION, (list(names),))
                return await cur.fetchone()

            application, pid, xid, waiting = await until(
                open_transaction, 30, "a transaction of a collector waiting, open"
            )
            victim = names[application]
            victim.kill()
            await holder.rollback()

            async def gone() -> bool:
                cur = await watcher.execute(
                    "select count(*) from pg_stat_activity where pid = %s", (pid,)
                )
                row = await cur.fetchone()
                return bool(row and row[0] == 0)

            await until(gone, 20, f"the backend of the killed {victim.name} gone")
            ended = "no xid yet"
            if xid is not None:
                cur = await watcher.execute("select pg_xact_status(%s::xid8)::text", (xid,))
                row = await cur.fetchone()
                ended = row[0] if row else "unknown"
            return victim, f"killed waiting on {waiting or 'nothing'}, its transaction: {ended}"


async def test_collector_killed_mid_transaction_the_living_take_over(fleet: Fleet) -> None:
    """Two collectors share the subscription; one is SIGKILLed inside a transaction and stays
    dead: the living one commits everything, the dead one's transaction leaves nothing."""
    living = [await fleet.add_collector("collector-a"), await fleet.add_collector("collector-b")]
    await fleet.add_edges(fleet.scale.edges)
    await fleet.start()
    recoveries, kills = [], []
    for n in range(fleet.scale.rounds):
        await asyncio.sleep(fleet.scale.warmup_s)
        victim, seen = await _kill_mid_transaction(fleet, living)
        living.remove(victim)
        kills.append(seen)
        fleet.phase(f"{victim.name} killed: {kills[-1]}")
        recoveries.append(await fleet.until_committed(fleet.produced()))
        if n + 1 < fleet.scale.rounds:  # the soak's next round needs two again
            replacement = await fleet.add_collector(f"collector-{n + 2}")
            replacement.start()
            await replacement.ready()
            living.append(replacement)
    verdict = await fleet.finish()
    record("collector SIGKILL mid-transaction (2 -> 1)", recoveries, verdict)
    assert verdict.clean, verdict.summary()
    assert all("on Lock" in k and "committed" not in k for k in kills), kills


# ---- 2. Broker restart ----------------------------------------------------------------------


async def test_broker_restart_with_persistence_loses_and_doubles_nothing(fleet: Fleet) -> None:
    await fleet.add_collector("collector-a")
    await fleet.add_edges(fleet.scale.edges)
    await fleet.start()
    recoveries = []
    for _ in range(fleet.scale.rounds):
        await asyncio.sleep(fleet.scale.warmup_s)
        await asyncio.to_thread(fleet.broker.stop)  # SIGTERM: Mosquitto saves its state
        await asyncio.sleep(fleet.scale.outage_s)
        await asyncio.to_thread(fleet.broker.start)
        fleet.phase("broker back")
        recoveries.append(await fleet.until_committed(fleet.produced()))
    verdict = await fleet.finish()
    record("broker restart (persistence on)", recoveries, verdict)
    assert verdict.clean, verdict.summary()


# ---- 3. PostgreSQL restart ------------------------------------------------------------------


async def test_postgres_restart_loses_and_doubles_nothing(
    fleet: Fleet, chaos_cluster: tuple[PostgresCluster, str]
) -> None:
    cluster = chaos_cluster[0]
    await fleet.add_collector("collector-a")
    await fleet.add_edges(fleet.scale.edges)
    await fleet.start()
    recoveries = []
    for _ in range(fleet.scale.rounds):
        await asyncio.sleep(fleet.scale.warmup_s)
        # A crash, not a polite shutdown: no checkpoint, crash recovery at the start.
        await asyncio.to_thread(cluster.stop, "immediate")
        await asyncio.sleep(fleet.scale.outage_s)
        await asyncio.to_thread(cluster.start)
        fleet.phase("PostgreSQL back")
        recoveries.append(await fleet.until_committed(fleet.produced()))
    verdict = await fleet.finish()
    record("PostgreSQL restart (immediate stop)", recoveries, verdict)
    assert verdict.clean, verdict.summary()


# ---- 4. SIGKILL an edge agent mid-batch -----------------------------------------------------

_BATCH_OF_LATER_READINGS = """
select distinct r.batch_id from readings r join edge_streams s using (stream_id)
where s.edge_id = %s and r.tag = %s and r.value > %s
"""
_BATCH_EVENTS = """
select e.kind, count(*) from batch_events e join edge_streams s using (stream_id)
where s.edge_id = %s and e.batch_id = %s group by e.kind
"""


async def test_edge_killed_mid_batch_keeps_what_it_captured_and_its_batch(fleet: Fleet) -> None:
    await fleet.add_collector("collector-a")
    await fleet.add_edges(fleet.scale.edges)
    await fleet.start()
    recoveries = []
    for n in range(fleet.scale.rounds):
        await asyncio.sleep(fleet.scale.warmup_s)
        victim = fleet.edges[n % len(fleet.edges)]
        await victim.kill()
        await asyncio.sleep(fleet.scale.outage_s)
        restarted = time.monotonic()
        victim.start()  # the same state folder: its outbox and its batch context survive
        await victim.ready()
        fleet.phase(f"{victim.edge_id} restarted and polling")
        # From the restart (the agent's own start-up included) until what the dead process
        # captured, and what the new one polls at first, is committed.
        recoveries.append(await fleet.until_committed(fleet.produced(), since=restarted))
    await asyncio.sleep(fleet.scale.warmup_s)  # the restarted agent at work, in its batch
    verdict = await fleet.finish()
    record("edge agent SIGKILL mid-batch", recoveries, verdict)
    assert verdict.clean, verdict.summary()
    killed = [e for e in fleet.edges if e.kills]
    # Only the reads in flight at each kill may be lacking (the device answered, the agent
    # died before its commit): one poll, and a request still in the device's socket.
    for edge in killed:
        assert len(edge.in_flight_at_kill) <= 2 * edge.kills, edge.in_flight_at_kill
    async with await psycopg.AsyncConnection.connect(fleet.database_url) as conn:
        for edge in killed:
            after = max(edge.in_flight_at_kill)
            cur = await conn.execute(_BATCH_OF_LATER_READINGS, (edge.edge_id, COUNTER, after))
            batches = [row[0] for row in await cur.fetchall()]
            assert batches == [fleet.batches[edge.edge_id]], "the restarted edge kept its batch"
            cur = await conn.execute(_BATCH_EVENTS, (edge.edge_id, fleet.batches[edge.edge_id]))
            assert dict(await cur.fetchall()) == {"batch_started": 1}


# ---- 5. An outage that fills the outbox -----------------------------------------------------

OUTBOX_BYTES = 20_000  # about 80 readings: the outage below overflows it several times


POLICIES = ("thin_oldest", "drop_oldest", "drop_newest")


async def test_outage_fills_the_outbox_drops_are_recorded_and_the_rest_arrives(
    fleet: Fleet,
) -> None:
    """Edges of each overflow policy, with a small outbox, lose the broker long enough to
    overflow it: what each policy dropped is a readings_dropped record the database holds
    and the reconciliation accepts exactly (its count is the hole), the rest arrives."""
    await fleet.add_collector("collector-a")
    edges = []
    for policy in POLICIES:
        settings = {
            "TRACE_EDGE_OUTBOX_MAX_BYTES": str(OUTBOX_BYTES),
            "TRACE_EDGE_OUTBOX_POLICY": policy,
        }
        edges += await fleet.add_edges(max(1, fleet.scale.edges // 2), settings)
    await fleet.start()
    recoveries = []
    for _ in range(fleet.scale.rounds):
        await asyncio.sleep(fleet.scale.warmup_s)
        before = {e.edge_id: await _dropped(e) for e in edges}
        await asyncio.to_thread(fleet.broker.stop)

        async def all_overflowed(before: dict[str, int] = before) -> bool:
            return all([await _dropped(e) > before[e.edge_id] for e in edges])

        await until(all_overflowed, max(30, fleet.scale.outage_s * 4), "every outbox overflowed")
        await asyncio.sleep(fleet.scale.outage_s)
        await asyncio.to_thread(fleet.broker.start)
        fleet.phase("broker back")
        recoveries.append(await fleet.until_committed(fleet.produced()))
    verdict = await fleet.finish()
    record("outbox full (each policy), then drained", recoveries, verdict)
    assert verdict.clean, verdict.summary()
    assert verdict.explained["readings_dropped"] > 0, "the outage overflowed no outbox"


async def _dropped(edge: EdgeProcess) -> int:
    status = await edge.status()
    assert status is not None, f"edge {edge.edge_id} does not answer"
    return int(status["outbox"]["streams"].get("readings", {}).get("dropped", 0))


# ---- 6. A storm of malformed messages -------------------------------------------------------

MAX_MESSAGE_BYTES = 200_000  # above the edges' 500-record messages, below the oversized ones


def _storm_payloads(rogue: str, victim: str, epoch: str, n: int) -> list[tuple[str, bytes]]:
    """(topic, payload) of `n` distinct malformed messages of the edge `rogue`: each kind a
    collector meets in the field, numbered so that every one is a dead letter of its own."""
    now = datetime.now(UTC).isoformat()
    far = "2150-01-01T00:00:00+00:00"
    readings = topics.data(rogue, "readings")

    def reading(seq: int, at: str = now, value: object = 1.0) -> dict[str, object]:
        return {"kind": "reading", "seq": seq, "time": at, "line": LINE, "batch": None,
                "device": "d", "tag": "t", "value": value}  # fmt: skip

    def envelope(edge: str, records: list[dict[str, object]], ep: str = epoch) -> bytes:
        return json.dumps(
            {
                "contract": "trace.v1",
                "edge_id": edge,
                "stream": "readings",
                "epoch": ep,
                "records": records,
            }
        ).encode()

    kinds = [
        lambda i: (readings, os.urandom(64) + i.to_bytes(4, "big")),  # not even UTF-8
        lambda i: (readings, f'{{"not json": {i}'.encode()),
        lambda i: (readings, json.dumps({"hello": i}).encode()),  # JSON, not an envelope
        lambda i: (readings, envelope(rogue, [reading(i, value="hot")])),  # wrong type
        lambda i: (readings, envelope(victim, [reading(i)])),  # another edge's id
        lambda i: (readings, envelope(rogue, [reading(i), reading(i + 2)])),  # not contiguous
        lambda i: (readings, envelope(rogue, [reading(10 * i, far), reading(10 * i + 1, far)])),
        lambda i: (readings, b"x" * (MAX_MESSAGE_BYTES + 1000 + i)),  # oversized
        lambda i: (topics.data(rogue, "bogus"), envelope(rogue, [reading(i)])),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def _forged_acks(edge: str, epoch: str, i: int) -> bytes:
    """Acks no collector sends (their ranges match nothing in flight): each must change
    nothing at the edge."""
    ack = {"contract": "trace.v1", "edge_id": edge, "stream": "readings", "epoch": epoch,
           "first_seq": 0, "last_seq": 2**63 - 1}  # fmt: skip
    forged = [
        ack,
        ack | {"epoch": uuid.uuid4().hex, "first_seq": i, "last_seq": i + 10},
        ack | {"first_seq": 10**12 + i, "last_seq": 10**12 + i + 5},
        ack | {"edge_id": "someone-else"},
        ack | {"first_seq": "0", "last_seq": "9"},
        None,  # not even UTF-8
    ]
    choice = forged[i % len(forged)]
    return b"\xff\xfe not an ack" if choice is None else json.dumps(choice).encode()


async def test_malformed_storm_is_dead_lettered_and_good_data_flows(fleet: Fleet) -> None:
    collector = await fleet.add_collector(
        "collector-a", {"TRACE_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}
    )
    good = await fleet.add_edges(fleet.scale.edges)
    rogue = f"rogue-{uuid.uuid4().hex[:8]}"
    rogue_broker = await fleet.broker.register(rogue)  # registered: its bytes reach ingest
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"  # known to the broker, not to the registry
    ghost_broker = fleet.broker.register_now(ghost)
    fleet.broker.reload()
    await until(lambda: broker_accepts(ghost_broker), 10, "the broker accepting the ghost")
    forger = await fleet.broker.register(f"forger-{uuid.uuid4().hex[:6]}", IdentityKind.collector)
    await fleet.start()
    await asyncio.sleep(fleet.scale.warmup_s)
    async with await psycopg.AsyncConnection.connect(fleet.database_url) as conn:
        cur = await conn.execute(
            "select edge_id, epoch from edge_streams where edge_id = any(%s)", (fleet.edge_ids,)
        )
        epochs: dict[str, str] = dict(await cur.fetchall())

    storm = _storm_payloads(rogue, good[0].edge_id, uuid.uuid4().hex, fleet.scale.storm_messages)
    ghost_storm = [
        (topics.data(ghost, "readings"), f'{{"ghost": {i}}}'.encode())
        for i in range(max(1, fleet.scale.storm_messages // 10))
    ]
    health: list[tuple[int, dict[str, Any]]] = []
    acked: dict[str, list[tuple[float, int]]] = {e.edge_id: [] for e in good}
    storming = True

    async def watch() -> None:
        while storming:
            health.append(await collector.healthz())
            for edge in good:
                status = await edge.status()
                if status is not None:
                    progress = (time.monotonic(), status["publisher"]["records_acked"])
                    acked[edge.edge_id].append(progress)
            await asyncio.sleep(0.2)

    async def publish(
        settings: BrokerSettings, messages: list[tuple[str, bytes]], retain: bool = False
    ) -> None:
        async with aiomqtt.Client(**settings.client_args()) as client:  # type: ignore[arg-type]
            for n, (topic, payload) in enumerate(messages):
                await client.publish(topic, payload, qos=1, retain=retain and n % 7 == 0)
                if n % 20 == 19:
                    await asyncio.sleep(0.05)  # a storm, mixed into the good traffic

    forged = [
        (topics.ack(edge.edge_id), _forged_acks(edge.edge_id, epochs[edge.edge_id], i))
        for i in range(max(6, fleet.scale.storm_messages // 5))
        for edge in good
    ]
    watcher = asyncio.create_task(watch())
    began = time.monotonic()
    await asyncio.gather(
        publish(rogue_broker, storm),
        publish(ghost_broker, ghost_storm),
        publish(forger, forged, retain=True),
    )
    storm_s = time.monotonic() - began
    fleet.phase(f"storm over after {storm_s:.1f}s")
    recovery = await fleet.until_committed(fleet.produced())
    storming = False
    await watcher
    verdict = await fleet.finish()
    record(f"malformed storm ({len(storm) + len(ghost_storm)} msgs, {len(forged)} forged acks)",
           [recovery], verdict)  # fmt: skip
    assert verdict.clean, verdict.summary()

    # The collector stayed up and kept its consumer running throughout.
    assert health and all(code == 200 for code, _ in health), health[-1]
    assert all(h["consumer"]["running"] and h["consumer"]["broker_connected"] for _, h in health)
    # Acks kept coming: no good edge waited long for one (half the storm, at least 2 s).
    for edge_id, samples in acked.items():
        stalls = [
            later[0] - earlier[0]
            for earlier, later in itertools.pairwise(samples)
            if later[1] == earlier[1]
        ]
        assert max(stalls, default=0) < max(2.0, storm_s / 2), (edge_id, stalls)
    # Every storm message is kept with its reason, once each; nothing of theirs committed.
    async with await psycopg.AsyncConnection.connect(fleet.database_url) as conn:
        cur = await conn.execute(
            "select count(*), coalesce(sum(repeats), 0) from dead_letters where topic like any(%s)",
            ([f"trace/v1/edges/{rogue}/%", f"trace/v1/edges/{ghost}/%"],),
        )
        rows, repeats = await cur.fetchone()  # type: ignore[misc]
        cur = await conn.execute(
            "select count(*) from readings r join edge_streams s using (stream_id)"
            " where s.edge_id = any(%s)",
            ([rogue, ghost],),
        )
        committed = (await cur.fetchone())[0]  # type: ignore[index]
        cur = await conn.execute("select count(*) from edge_streams where edge_id = %s", (ghost,))
        ghost_streams = (await cur.fetchone())[0]  # type: ignore[index]
    sent = len(storm) + len(ghost_storm)
    assert (rows, repeats) == (sent, sent), "each malformed message one dead letter"
    assert committed == 0 and ghost_streams == 0
    # The forged acks reached the edges and changed nothing (the reconciliation is clean).
    for edge in good:
        status = await edge.status()
        assert status is not None and sum(status["publisher"]["acks_ignored"].values()) > 0
