"""No message can stop ingest: hostile or broken records are refused by number in the ack
(the records behind them are committed), unreadable messages are dead letters kept once,
and a resend that differs from what was committed is refused and kept with both versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloud_collector import dead_letters
from cloud_collector import ingest as ingest_module
from cloud_collector.ingest import ingest
from protocols.mqtt import topics
from protocols.mqtt.contract import MAX_ITEMS, MAX_SEQ
from tests.cloud_collector.test_ingest import T0, conn, edge, envelope, reading, stored

__all__ = ["conn", "edge"]  # fixtures shared with test_ingest


def batch_started(seq: int, by: str = "op-1", batch: str = "B-1") -> dict:
    return {
        "kind": "batch_started",
        "seq": seq,
        "time": (T0 + timedelta(seconds=seq)).isoformat(),
        "line": "line-1",
        "batch": batch,
        "by": by,
    }


async def dead_letter_rows(conn: psycopg.AsyncConnection, topic: str) -> list[tuple]:
    cur = await conn.execute(
        "select reason, refused, first_seq, last_seq, repeats from dead_letters"
        " where topic = %s order by id",
        (topic,),
    )
    return await cur.fetchall()


def raw_envelope(edge: str, records_json: str, stream: str = "readings") -> bytes:
    head = json.dumps({"edge_id": edge, "stream": stream, "epoch": "e1"})
    return (head[:-1] + ', "records": [' + records_json + "]}").encode()


# Each: the hostile record (as JSON text, so that the bytes are exactly what an attacker or
# a sloppy PLC sends), and a piece of the reason the ack must carry.
HOSTILE = {
    "NUL in by": (
        '{"kind": "batch_started", "seq": 0, "time": "2026-11-25T10:00:00Z", "line": "l1",'
        ' "batch": "B1", "by": "a\\u0000"}',
        "NUL character",
    ),
    "lone surrogate": (
        '{"kind": "batch_started", "seq": 0, "time": "2026-11-25T10:00:00Z", "line": "l1",'
        ' "batch": "B1\\ud800", "by": "op"}',
        "unable to parse raw data as a unicode string",
    ),
    "value 1e309": (json.dumps(reading(0)).replace('"value": 1.0', '"value": 1e309'), "finite"),
    "value NaN": (json.dumps(reading(0)).replace('"value": 1.0', '"value": NaN'), "finite"),
    "year 9999": (json.dumps(reading(0) | {"time": "9999-01-01T00:00:00Z"}), "outside 2000-2099"),
    "by of 129 characters": (json.dumps(batch_started(0, by="x" * 129)), "at most 128 characters"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
async def test_a_hostile_record_is_refused_in_the_ack_and_the_next_one_flows(
    conn, edge, case
) -> None:
    record, reason = HOSTILE[case]
    good = json.dumps(reading(1, 21.5))
    topic = topics.data(edge, "readings")
    outcome = await ingest(conn, topic, raw_envelope(edge, record + ", " + good))
    ack = outcome.ack
    assert ack is not None and ack.refused is not None and reason in ack.refused
    assert (ack.first_seq, ack.last_seq) == (0, 1)
    assert [(r.first_seq, r.last_seq) for r in ack.refused_runs()] == [(0, 0)]
    assert await stored(conn, edge) == [(1, 21.5, "B1")]  # the record behind it is committed
    [(kept_reason, refused, first, last, repeats)] = await dead_letter_rows(conn, topic)
    assert reason in kept_reason and (refused, first, last, repeats) == (True, 0, 1, 1)
    after = await ingest(conn, topic, envelope(edge, [reading(2, 22.0)]))
    assert after.ack is not None and after.ack.refused is None and after.inserted == 1


async def test_a_sequence_number_past_bigint_is_a_dead_letter_and_the_stream_flows_on(
    conn, edge
) -> None:
    topic = topics.data(edge, "readings")
    outcome = await ingest(conn, topic, envelope(edge, [reading(0) | {"seq": 2**63}]))
    assert outcome.ack is None
    assert f"seq: Input should be less than or equal to {MAX_SEQ}" in (outcome.reason or "")
    assert [r[1:] for r in await dead_letter_rows(conn, topic)] == [(False, None, None, 1)]
    good = await ingest(conn, topic, envelope(edge, [reading(0)]))
    assert good.ack is not None and good.inserted == 1


async def test_one_bad_record_among_500_refuses_only_itself(conn, edge) -> None:
    records = [reading(seq, float(seq)) for seq in range(500)]
    records[17]["value"] = "NaN"  # a string: refused by the contract
    records[18] = reading(18) | {"time": "9999-01-01T00:00:00Z"}
    topic = topics.data(edge, "readings")
    outcome = await ingest(conn, topic, envelope(edge, records))
    assert outcome.ack is not None and outcome.inserted == 498 and outcome.refused == 2
    runs = outcome.ack.refused_runs()
    assert [(r.first_seq, r.last_seq) for r in runs] == [(17, 17), (18, 18)]
    assert "2 of 500 records refused" in (outcome.ack.refused or "")
    assert [s for s, *_ in await stored(conn, edge)] == [s for s in range(500) if s not in (17, 18)]
    # The refused numbers are holes of the stream, listed as such once the stream moves on.
    await ingest(conn, topic, envelope(edge, [reading(500)]))
    gaps = await (
        await conn.execute(
            "select first_missing, last_missing from stream_gaps where edge_id = %s", (edge,)
        )
    ).fetchall()
    assert gaps == [(17, 18)]


async def test_the_same_bad_message_resent_five_times_is_one_dead_letter(conn, edge) -> None:
    topic = topics.data(edge, "events")
    bad = envelope(edge, [batch_started(0, by="x" * 129)], stream="events")
    for _ in range(5):
        outcome = await ingest(conn, topic, bad)
        assert outcome.ack is not None and outcome.ack.refused is not None
    unreadable = b'{"edge_id": "' + edge.encode() + b'", "records": "nope"}'
    for _ in range(5):
        assert (await ingest(conn, topic, unreadable)).ack is None
    rows = await dead_letter_rows(conn, topic)
    assert [(refused, first, last, repeats) for _, refused, first, last, repeats in rows] == [
        (True, 0, 0, 5),
        (False, None, None, 5),
    ]


async def test_dead_letters_are_pruned_after_their_retention(conn, edge) -> None:
    topic = topics.data(edge, "readings")
    await ingest(conn, topic, b"old garbage")
    await ingest(conn, topic, b"new garbage")
    await conn.execute(
        "update dead_letters set last_seen = now() - interval '31 days'"
        " where topic = %s and payload = 'old garbage'",
        (topic,),
    )
    assert await dead_letters.prune(conn, timedelta(days=30)) >= 1
    rows = await (
        await conn.execute("select payload from dead_letters where topic = %s", (topic,))
    ).fetchall()
    assert rows == [(b"new garbage",)]


async def test_a_time_too_far_past_the_collectors_clock_is_refused(conn, edge) -> None:
    now = datetime.now(UTC)
    near = reading(0) | {"time": (now + timedelta(minutes=4)).isoformat()}
    far = reading(1) | {"time": (now + timedelta(minutes=6)).isoformat()}
    topic = topics.data(edge, "readings")
    outcome = await ingest(conn, topic, envelope(edge, [near, far]), max_skew=timedelta(minutes=5))
    assert outcome.ack is not None and outcome.inserted == 1
    [run] = outcome.ack.refused_runs()
    assert (run.first_seq, run.last_seq) == (1, 1)
    assert "past the collector's clock" in run.reason


async def test_a_bug_in_ingest_for_one_record_refuses_that_record_only(
    conn, edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure no one foresaw (here injected for seq 2 only) rolls back what it touched,
    and the other records of the message are committed."""
    real = ingest_module._insert_event

    async def broken(conn: Any, event: Any, params: dict[str, object]) -> int:
        if event.seq == 2:
            raise ZeroDivisionError("injected for this record")
        return await real(conn, event, params)

    monkeypatch.setattr(ingest_module, "_insert_event", broken)
    records = [batch_started(s, batch=f"B-{edge}-{s}") for s in range(4)]
    topic = topics.data(edge, "events")
    outcome = await ingest(conn, topic, envelope(edge, records, stream="events"))
    assert outcome.ack is not None and outcome.inserted == 3
    [run] = outcome.ack.refused_runs()
    assert (run.first_seq, run.last_seq) == (2, 2)
    assert "ZeroDivisionError: injected for this record" in run.reason
    committed = await (
        await conn.execute(
            "select seq from batch_events join edge_streams using (stream_id)"
            " where edge_id = %s order by seq",
            (edge,),
        )
    ).fetchall()
    assert committed == [(0,), (1,), (3,)]
    [(reason, refused, *_)] = await dead_letter_rows(conn, topic)
    assert refused and "ZeroDivisionError" in reason


async def test_a_data_error_of_the_database_refuses_the_record(
    conn, edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def out_of_range(conn: Any, event: Any, params: dict[str, object]) -> int:
        await conn.execute("select 2147483648::int4")  # psycopg.errors.NumericValueOutOfRange
        return 1

    monkeypatch.setattr(ingest_module, "_insert_event", out_of_range)
    topic = topics.data(edge, "events")
    outcome = await ingest(conn, topic, envelope(edge, [batch_started(0)], stream="events"))
    assert outcome.ack is not None and "NumericValueOutOfRange" in (outcome.ack.refused or "")
    # The connection is usable for the next message.
    assert (await ingest(conn, topic, envelope(edge, [reading(1)], stream="events"))).inserted


async def test_an_unavailable_database_is_raised_not_refused(
    conn, edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def shutting_down(conn: Any, event: Any, params: dict[str, object]) -> int:
        raise psycopg.errors.AdminShutdown("terminating connection due to administrator command")

    monkeypatch.setattr(ingest_module, "_insert_event", shutting_down)
    topic = topics.data(edge, "events")
    with pytest.raises(psycopg.errors.AdminShutdown):
        await ingest(conn, topic, envelope(edge, [batch_started(0)], stream="events"))
    assert await dead_letter_rows(conn, topic) == []  # no ack, nothing kept: the edge resends


async def test_too_many_separate_refusals_refuse_the_whole_message(conn, edge) -> None:
    records = [reading(s) | ({"value": "x"} if s % 2 else {}) for s in range(300)]
    outcome = await ingest(conn, topics.data(edge, "readings"), envelope(edge, records))
    ack = outcome.ack
    assert (
        ack is not None
        and ack.refusals == []
        and "more than 100 separate runs" in (ack.refused or "")
    )
    assert await stored(conn, edge) == []


# -- resends that differ from what was committed ------------------------------------------


async def conflicts(conn: psycopg.AsyncConnection, edge: str) -> list[tuple]:
    cur = await conn.execute(
        "select seq, kind, fields, committed, received, repeats from ingest_conflicts"
        " where edge_id = %s order by seq",
        (edge,),
    )
    return await cur.fetchall()


async def test_a_resend_with_other_content_is_refused_and_kept_with_both_versions(
    conn, edge
) -> None:
    topic = topics.data(edge, "readings")
    await ingest(conn, topic, envelope(edge, [reading(s, 10.0 + s) for s in range(10)]))
    # A line PC restored from an old disk image numbers again from 5: new readings, new times.
    restored = [
        reading(s, 99.0, time=(T0 + timedelta(hours=1, seconds=s)).isoformat())
        for s in range(5, 15)
    ]
    for _ in range(2):
        outcome = await ingest(conn, topic, envelope(edge, restored))
        ack = outcome.ack
        assert ack is not None and outcome.conflicts == 5
        [run] = ack.refused_runs()
        assert (run.first_seq, run.last_seq) == (5, 9)
        assert "differs from the record committed under the same sequence number" in run.reason
    # What was committed is untouched, and 10..14 were new.
    rows = await stored(conn, edge)
    assert [(s, v) for s, v, _ in rows] == [(s, 10.0 + s) for s in range(10)] + [
        (s, 99.0) for s in range(10, 15)
    ]
    found = await conflicts(conn, edge)
    assert [(seq, kind, fields, repeats) for seq, kind, fields, _, _, repeats in found] == [
        (s, "reading", ["time", "value"], 2) for s in range(5, 10)
    ]
    _, _, _, committed, received, _ = found[0]
    assert (committed["value"], received["value"]) == (15.0, 99.0)
    assert committed["time"] != received["time"]


async def test_an_identical_resend_is_a_duplicate_not_a_conflict(conn, edge) -> None:
    topic = topics.data(edge, "events")
    records = [batch_started(0, batch=f"B-{edge}"), {**reading(1), "detail": None}]
    await ingest(conn, topic, envelope(edge, records, stream="events"))
    again = await ingest(conn, topic, envelope(edge, records, stream="events"))
    assert again.ack is not None and again.ack.duplicate and again.ack.refused is None
    assert await conflicts(conn, edge) == []


def transformation(seq: int, event_id: str, inputs: int, output_lots: int = 1) -> dict:
    return {
        "kind": "transformation_event",
        "seq": seq,
        "time": T0.isoformat(),
        "event_id": event_id,
        "transformation_id": event_id,
        "read_point": "line-1",
        "line": "line-1",
        "batch": event_id,
        "inputs": [
            {"epc_class": f"urn:x:in:{i}", "gtin": "09506000134352", "lot": f"IN{i}"}
            for i in range(inputs)
        ],
        "outputs": [
            {"epc_class": f"urn:x:out:{i}", "gtin": "09506000134369", "lot": f"OUT{i}"}
            for i in range(output_lots)
        ],
    }


async def test_a_trace_event_resent_with_other_items_is_a_conflict(conn, edge) -> None:
    topic = topics.data(edge, "events")
    event = transformation(0, f"{edge}-t1", inputs=2)
    await ingest(conn, topic, envelope(edge, [event], stream="events"))
    changed = transformation(0, f"{edge}-t1", inputs=3)
    outcome = await ingest(conn, topic, envelope(edge, [changed], stream="events"))
    assert outcome.conflicts == 1 and outcome.ack is not None and outcome.ack.refused
    [(seq, kind, fields, committed, received, _)] = await conflicts(conn, edge)
    assert (seq, kind, fields) == (0, "transformation_event", ["inputs"])
    assert (len(committed["inputs"]), len(received["inputs"])) == (2, 3)


async def test_a_new_event_under_an_event_id_already_taken_is_refused(conn, edge) -> None:
    topic = topics.data(edge, "events")
    await ingest(conn, topic, envelope(edge, [transformation(0, f"{edge}-t", 1)], stream="events"))
    outcome = await ingest(
        conn, topic, envelope(edge, [transformation(1, f"{edge}-t", 2)], stream="events")
    )
    assert outcome.ack is not None and "is already committed as another event" in (
        outcome.ack.refused or ""
    )


# -- the limits of a transformation ---------------------------------------------------------


async def test_a_transformation_at_the_item_limit_is_ingested(conn, edge) -> None:
    topic = topics.data(edge, "events")
    event = transformation(0, f"{edge}-big", inputs=MAX_ITEMS)
    event["outputs"] += [
        {"epc": f"urn:epc:id:sgtin:0614141.812345.{i}"} for i in range(MAX_ITEMS - 1)
    ]
    outcome = await ingest(conn, topic, envelope(edge, [event], stream="events"))
    assert outcome.ack is not None and outcome.ack.refused is None and outcome.inserted == 1
    items = await (
        await conn.execute("select count(*) from event_items where event_id = %s", (f"{edge}-big",))
    ).fetchone()
    assert items == (2 * MAX_ITEMS,)


@pytest.mark.parametrize(
    ("inputs", "output_lots", "reason"),
    [
        (MAX_ITEMS + 1, 1, "inputs: List should have at most 10000 items"),
        (501, 500, "501 input lots x 500 output lots would make 250,500 lot links"),
    ],
    ids=["inputs past the limit", "links past the limit"],
)
async def test_a_transformation_past_its_limits_is_refused_with_the_reason(
    conn, edge, inputs, output_lots, reason
) -> None:
    topic = topics.data(edge, "events")
    event = transformation(0, f"{edge}-huge", inputs=inputs, output_lots=output_lots)
    outcome = await ingest(conn, topic, envelope(edge, [event], stream="events"))
    assert outcome.ack is not None and reason in (outcome.ack.refused or "")
    assert outcome.inserted == 0
