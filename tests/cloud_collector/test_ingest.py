"""Ingest: idempotent commits, acks that say exactly what was committed, and bad input
dead-lettered with its reason while the rest flows on."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud_collector.ingest import ingest
from protocols.mqtt import topics
from tests.conftest import Services

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def reading(seq: int, value: float = 1.0, batch: str | None = "B1", **extra: object) -> dict:
    return {
        "kind": "reading",
        "seq": seq,
        "time": (T0 + timedelta(seconds=seq)).isoformat(),
        "line": "line-1",
        "batch": batch,
        "device": "dev-1",
        "tag": "temperature",
        "value": value,
        "unit": "Cel",
        **extra,
    }


def envelope(edge: str, records: list[dict], stream: str = "readings", epoch: str = "e1") -> bytes:
    return json.dumps(
        {"edge_id": edge, "stream": stream, "epoch": epoch, "records": records}
    ).encode()


@pytest.fixture
async def conn(services: Services) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        yield c


@pytest.fixture
def edge() -> str:
    return f"edge-{uuid.uuid4().hex[:8]}"


async def stored(conn: psycopg.AsyncConnection, edge: str) -> list[tuple]:
    cur = await conn.execute(
        "select seq, value, batch_id from readings join edge_streams using (stream_id)"
        " where edge_id = %s order by seq",
        (edge,),
    )
    return await cur.fetchall()


async def dead_letters(conn: psycopg.AsyncConnection, topic: str) -> list[str]:
    cur = await conn.execute(
        "select reason from dead_letters where topic = %s order by id", (topic,)
    )
    return [r[0] for r in await cur.fetchall()]


async def test_a_message_is_committed_and_acknowledged_by_its_range(conn, edge) -> None:
    outcome = await ingest(
        conn, topics.data(edge, "readings"), envelope(edge, [reading(0), reading(1)])
    )
    assert outcome.ack is not None
    assert (outcome.ack.first_seq, outcome.ack.last_seq, outcome.ack.duplicate) == (0, 1, False)
    assert outcome.inserted == 2
    assert await stored(conn, edge) == [(0, 1.0, "B1"), (1, 1.0, "B1")]


async def test_a_resend_changes_nothing_even_when_regrouped(conn, edge) -> None:
    topic = topics.data(edge, "readings")
    await ingest(conn, topic, envelope(edge, [reading(0, 10.0), reading(1, 11.0)]))
    again = await ingest(conn, topic, envelope(edge, [reading(0, 10.0), reading(1, 11.0)]))
    assert again.ack is not None and again.ack.duplicate and again.inserted == 0
    # The edge regrouped after a reconnect: 1..3 overlaps what is committed.
    overlap = await ingest(
        conn, topic, envelope(edge, [reading(1, 11.0), reading(2, 12.0), reading(3, 13.0)])
    )
    assert overlap.inserted == 2 and overlap.ack is not None and not overlap.ack.duplicate
    assert [r[0] for r in await stored(conn, edge)] == [0, 1, 2, 3]


async def test_a_new_epoch_is_a_new_numbering(conn, edge) -> None:
    topic = topics.data(edge, "readings")
    await ingest(conn, topic, envelope(edge, [reading(0, 1.0)], epoch="old"))
    outcome = await ingest(conn, topic, envelope(edge, [reading(0, 2.0)], epoch="new"))
    assert outcome.inserted == 1
    assert sorted(r[1] for r in await stored(conn, edge)) == [1.0, 2.0]


async def test_batch_events_set_start_and_end(conn, edge) -> None:
    batch = f"B-{uuid.uuid4().hex[:6]}"
    events = [
        {
            "kind": "batch_started",
            "seq": 0,
            "time": T0.isoformat(),
            "line": "line-1",
            "batch": batch,
            "by": "op-1",
        },
        {
            "kind": "batch_ended",
            "seq": 1,
            "time": (T0 + timedelta(hours=1)).isoformat(),
            "line": "line-1",
            "batch": batch,
            "by": "plc",
        },
    ]
    outcome = await ingest(
        conn, topics.data(edge, "events"), envelope(edge, events, stream="events")
    )
    assert outcome.inserted == 2
    row = await (
        await conn.execute(
            "select line_id, edge_id, started_at, started_by, ended_at, ended_by"
            " from batches where batch_id = %s",
            (batch,),
        )
    ).fetchone()
    assert row == ("line-1", edge, T0, "op-1", T0 + timedelta(hours=1), "plc")


# Messages that do not even parse into a range of records: dead letters, nothing to ack.
UNREADABLE = {
    "not json": (b"{not json", "invalid readings message"),
    "empty records": (None, "records: List should have at least 1 item"),
    "gap in sequence": ("gap", "records[1].seq is 5, expected 1"),
    "wrong edge": ("impostor", "does not match topic edge"),
}


@pytest.mark.parametrize("case", UNREADABLE, ids=list(UNREADABLE))
async def test_unreadable_messages_are_dead_lettered_with_the_reason(conn, edge, case) -> None:
    payload, reason = UNREADABLE[case]
    match payload:
        case None:
            payload = envelope(edge, [])
        case "gap":
            payload = envelope(edge, [reading(0), reading(5)])
        case "impostor":
            payload = envelope("someone-else", [reading(0)])
    topic = topics.data(edge, "readings")
    outcome = await ingest(conn, topic, payload)
    assert outcome.ack is None
    assert reason in (outcome.reason or "")
    assert await dead_letters(conn, topic) == [outcome.reason]
    assert await stored(conn, edge) == []
    # The next good message on the same topic flows on.
    good = await ingest(conn, topic, envelope(edge, [reading(0)]))
    assert good.inserted == 1


# Records the contract refuses in a message whose range is known: acknowledged as refused.
REFUSED = {
    "unknown field": (reading(0, colour="red"), "reading.colour: Extra inputs are not permitted"),
    "naive timestamp": (
        reading(0) | {"time": "2026-11-25T10:00:00"},
        "timestamp must carry a UTC offset",
    ),
    "good without value": (
        reading(0) | {"value": None},
        "a reading with quality 'good' must have a value",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
async def test_refused_records_are_acknowledged_as_refused(conn, edge, case) -> None:
    record, reason = REFUSED[case]
    topic = topics.data(edge, "readings")
    outcome = await ingest(conn, topic, envelope(edge, [record]))
    assert outcome.ack is not None and outcome.ack.refused is not None
    assert reason in outcome.ack.refused
    assert [(r.first_seq, r.last_seq) for r in outcome.ack.refused_runs()] == [(0, 0)]
    assert await dead_letters(conn, topic) == [outcome.reason]
    assert await stored(conn, edge) == []
    good = await ingest(conn, topic, envelope(edge, [reading(1)]))
    assert good.inserted == 1 and good.ack is not None and good.ack.refused is None


async def test_a_message_on_a_foreign_topic_is_dead_lettered(conn) -> None:
    outcome = await ingest(conn, "trace/v1/edges/x/status", b"{}")
    assert outcome.ack is None and "is not trace/v1/edges/<edge_id>/data/<stream>" in (
        outcome.reason or ""
    )


async def test_bad_quality_readings_are_kept_with_their_detail(conn, edge) -> None:
    bad = reading(0) | {"value": None, "quality": "bad", "detail": "Modbus exception 2"}
    outcome = await ingest(conn, topics.data(edge, "readings"), envelope(edge, [bad]))
    assert outcome.inserted == 1
    row = await (
        await conn.execute(
            "select value, quality, detail from readings"
            " join edge_streams using (stream_id) where edge_id = %s",
            (edge,),
        )
    ).fetchone()
    assert row == (None, "bad", "Modbus exception 2")


async def test_late_readings_are_marked_backfill(conn, edge) -> None:
    now = datetime.now(UTC)
    late = reading(0) | {"time": (now - timedelta(hours=2)).isoformat()}
    fresh = reading(1) | {"time": now.isoformat()}
    await ingest(conn, topics.data(edge, "readings"), envelope(edge, [late, fresh]))
    rows = await (
        await conn.execute(
            "select seq, backfill from readings join edge_streams using (stream_id)"
            " where edge_id = %s order by seq",
            (edge,),
        )
    ).fetchall()
    assert rows == [(0, True), (1, False)]


async def test_device_gaps_and_outbox_drops_are_stored(conn, edge) -> None:
    records = [
        {
            "kind": "device_offline",
            "seq": 0,
            "time": T0.isoformat(),
            "line": "l1",
            "device": "plc-1",
            "detail": "timeout",
        },
        {
            "kind": "device_online",
            "seq": 1,
            "time": (T0 + timedelta(minutes=5)).isoformat(),
            "line": "l1",
            "device": "plc-1",
        },
        {
            "kind": "readings_dropped",
            "seq": 2,
            "time": T0.isoformat(),
            "stream": "readings",
            "count": 50,
            "first_seq": 0,
            "last_seq": 99,
            "policy": "thin_oldest",
        },
    ]
    outcome = await ingest(conn, topics.data(edge, "events"), envelope(edge, records, "events"))
    assert outcome.inserted == 3
    kinds = await (
        await conn.execute(
            "select kind, detail from device_events join edge_streams using (stream_id)"
            " where edge_id = %s order by seq",
            (edge,),
        )
    ).fetchall()
    assert kinds == [("device_offline", "timeout"), ("device_online", None)]
    drop = await (
        await conn.execute(
            "select dropped_stream, count, first_seq, last_seq, policy from readings_dropped"
            " join edge_streams using (stream_id) where edge_id = %s",
            (edge,),
        )
    ).fetchone()
    assert drop == ("readings", 50, 0, 99, "thin_oldest")


async def test_sequence_gaps_are_listed_per_stream_and_epoch(conn, edge) -> None:
    topic = topics.data(edge, "readings")
    await ingest(conn, topic, envelope(edge, [reading(0), reading(1)]))
    await ingest(conn, topic, envelope(edge, [reading(5)]))
    await ingest(conn, topic, envelope(edge, [reading(2), reading(3)]))
    await ingest(conn, topic, envelope(edge, [reading(9)], epoch="e2"))
    gaps = await (
        await conn.execute(
            "select epoch, first_missing, last_missing from stream_gaps where edge_id = %s"
            " order by epoch, first_missing",
            (edge,),
        )
    ).fetchall()
    assert gaps == [("e1", 4, 4), ("e2", 0, 8)]


async def test_trace_events_are_stored_with_their_items_and_documents(conn, edge) -> None:
    receipt = {
        "kind": "object_event",
        "seq": 0,
        "time": T0.isoformat(),
        "event_id": f"{edge}-r1",
        "action": "OBSERVE",
        "biz_step": "receiving",
        "disposition": "in_progress",
        "read_point": "dock-3",
        "device": "gate-3",
        "items": [
            {"epc": "urn:epc:id:sscc:0614141.1234567890", "sscc": "106141411234567897"},
            {"raw": "E2801160600002084D2A", "unknown_reason": "not an EPC header"},
        ],
        "biz_transactions": [{"type": "po", "id": "PO-77"}],
        "sightings": [
            {
                "epc_hex": "31140614141234567890",
                "first_seen": T0.isoformat(),
                "last_seen": T0.isoformat(),
                "count": 12,
                "best_rssi_dbm": -51.5,
                "antennas": [1, 2],
                "direction": "in",
            }
        ],
    }
    transform = {
        "kind": "transformation_event",
        "seq": 1,
        "time": T0.isoformat(),
        "event_id": f"{edge}-t1",
        "transformation_id": "B-9",
        "read_point": "line-1",
        "line": "line-1",
        "batch": "B-9",
        "operators": ["OP-1"],
        "inputs": [
            {
                "epc_class": "https://id.gs1.org/01/09506000134352/10/FLOUR7",
                "gtin": "09506000134352",
                "lot": "FLOUR7",
                "quantity": 25,
                "uom": "KGM",
            }
        ],
        "outputs": [
            {
                "epc_class": "https://id.gs1.org/01/09506000134369/10/B-9",
                "gtin": "09506000134369",
                "lot": "B-9",
                "quantity": 400,
                "uom": "EA",
            }
        ],
    }
    topic = topics.data(edge, "events")
    outcome = await ingest(conn, topic, envelope(edge, [receipt, transform], "events"))
    assert outcome.inserted == 2
    again = await ingest(conn, topic, envelope(edge, [receipt, transform], "events"))
    assert again.inserted == 0  # a resend
    items = await (
        await conn.execute(
            "select e.event_type, e.biz_step, i.role, i.sscc, i.gtin, i.lot, i.quantity, i.raw"
            " from trace_events e join event_items i using (event_id)"
            " where e.source_edge = %s order by e.event_time, e.event_type, i.role, i.position",
            (edge,),
        )
    ).fetchall()
    assert items == [
        ("ObjectEvent", "receiving", "observed", "106141411234567897", None, None, None, None),
        ("ObjectEvent", "receiving", "observed", None, None, None, None, "E2801160600002084D2A"),
        (
            "TransformationEvent",
            "commissioning",
            "input",
            None,
            "09506000134352",
            "FLOUR7",
            25.0,
            None,
        ),
        (
            "TransformationEvent",
            "commissioning",
            "output",
            None,
            "09506000134369",
            "B-9",
            400.0,
            None,
        ),
    ]
    docs = await (
        await conn.execute(
            "select type, id from event_documents where event_id = %s", (f"{edge}-r1",)
        )
    ).fetchall()
    assert docs == [("po", "PO-77")]
