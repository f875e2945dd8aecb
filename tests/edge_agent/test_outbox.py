"""The outbox contract (docs/outbox.md), clause by clause."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.outbox import EVENTS, READINGS, Outbox
from edge_agent.records import UNNUMBERED, ReadingForm, TakenAt
from edge_agent.store import EdgeStore
from protocols.mqtt.contract import MAX_SEQ, BatchEvent, Reading

AT = datetime(2026, 11, 25, tzinfo=UTC)


def reading(value: float) -> Reading:
    return Reading(seq=UNNUMBERED, time=AT, line="l", batch=None, device="d", tag="t", value=value)


def event(n: int) -> BatchEvent:
    return BatchEvent(
        seq=UNNUMBERED, kind="batch_started", time=AT, line="l", batch=f"B{n}", by="op"
    )


def seqs(run: list[tuple[int, str]]) -> list[int]:
    return [seq for seq, _ in run]


def test_records_are_numbered_per_stream_and_stored_as_contract_json(tmp_path: Path) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    assert box.append_many(
        [(READINGS, reading(1.5)), (EVENTS, event(1)), (READINGS, reading(2))]
    ) == [0, 0, 1]
    (seq, body), (seq2, body2) = box.take(READINGS, 10)
    assert (seq, seq2) == (0, 1)
    assert body == reading(1.5).model_copy(update={"seq": 0}).model_dump_json()
    assert Reading.model_validate_json(body2) == reading(2).model_copy(update={"seq": 1})


def test_a_checked_reading_is_stored_as_its_model_numbered(tmp_path: Path) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    form, taken = ReadingForm("l", None, "d", "t", None), TakenAt(AT)
    checked = [form.reading(taken, 1.5), form.reading(taken, 2.0, "uncertain", AT)]
    assert box.append_many([(READINGS, checked[0]), (EVENTS, event(1))]) == [0, 0]
    assert box.append(READINGS, reading(3.0)) == 1
    assert box.append(READINGS, checked[1]) == 2
    bodies = [body for _, body in box.take(READINGS, 10)]
    assert bodies == [
        reading(1.5).model_copy(update={"seq": 0}).model_dump_json(),
        reading(3.0).model_copy(update={"seq": 1}).model_dump_json(),
        reading(2.0)
        .model_copy(update={"seq": 2, "quality": "uncertain", "device_time": AT})
        .model_dump_json(),
    ]


def test_take_accept_requeue(tmp_path: Path) -> None:
    box = Outbox(
        EdgeStore(tmp_path / "o.db"),
    )
    box.append_many([(READINGS, reading(v)) for v in range(5)])
    assert seqs(box.take(READINGS, 2)) == [0, 1]
    assert seqs(box.take(READINGS, 2)) == [2, 3]
    assert box.accept(READINGS, box.epoch, 0, 1) == 2
    assert box.accept(READINGS, "another-epoch", 2, 3) == 0
    box.requeue(READINGS)  # 2 and 3 were never acknowledged: they go again
    assert seqs(box.take(READINGS, 10)) == [2, 3, 4]
    assert box.accept(READINGS, box.epoch, 2, 4) == 3
    assert box.depth(READINGS) == 0 and box.take(READINGS, 10) == []


def test_after_a_requeue_live_records_go_first_and_the_backlog_drains_in_order(
    tmp_path: Path,
) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    box.append_many([(READINGS, reading(v)) for v in range(6)])  # captured during an outage
    box.requeue(READINGS)  # reconnected
    box.append_many([(READINGS, reading(v)) for v in (100, 101)])  # live
    assert seqs(box.take(READINGS, 4)) == [6, 7]
    assert seqs(box.take(READINGS, 4)) == [0, 1, 2, 3]
    box.append(READINGS, reading(102))
    assert seqs(box.take(READINGS, 4)) == [8]
    assert seqs(box.take(READINGS, 4)) == [4, 5]
    assert box.take(READINGS, 4) == []


def test_numbers_and_epoch_survive_a_restart_even_when_all_was_acknowledged(tmp_path: Path) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    box.append_many([(READINGS, reading(v)) for v in range(3)])
    epoch = box.epoch
    assert seqs(box.take(READINGS, 2)) == [0, 1]
    box.accept(READINGS, epoch, 0, 1)
    box.store.close()
    again = Outbox(EdgeStore(tmp_path / "o.db"))
    assert again.epoch == epoch
    assert seqs(again.take(READINGS, 10)) == [2]  # unacknowledged: sent again after restart
    assert again.append(READINGS, reading(9)) == 3


def test_a_message_is_contiguous_so_it_stops_at_a_hole(tmp_path: Path) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    box.append_many([(READINGS, reading(v)) for v in range(5)])
    box.take(READINGS, 2)
    assert seqs(box.take(READINGS, 1)) == [2]
    box.accept(READINGS, box.epoch, 2, 2)
    box.requeue(READINGS)
    assert seqs(box.take(READINGS, 10)) == [0, 1]
    assert seqs(box.take(READINGS, 10)) == [3, 4]


@pytest.mark.parametrize(
    ("policy", "dropped"),
    [
        ("thin_oldest", 5),  # every second reading of the oldest tenth (10 of 101)
        ("drop_oldest", 10),  # the oldest tenth
    ],
)
def test_when_full_readings_are_dropped_by_policy_and_events_never(
    tmp_path: Path, policy: str, dropped: int
) -> None:
    size = len(reading(0.0).model_copy(update={"seq": 10}).model_dump_json())
    box = Outbox(EdgeStore(tmp_path / "o.db"), max_bytes=size * 100, policy=policy)  # type: ignore[arg-type]
    box.append_many([(EVENTS, event(0))])
    box.append_many([(READINGS, reading(float(v))) for v in range(101)])  # one over the bound
    stats = box.stats()
    assert stats.streams[READINGS].dropped == dropped
    assert stats.streams[READINGS].depth == 101 - dropped
    assert any("dropped" in a for a in stats.alarms)
    runs = [json.loads(b) for _, b in box.take(EVENTS, 10)]
    assert runs[0]["kind"] == "batch_started"
    marker = runs[1]
    assert (marker["kind"], marker["policy"], marker["count"]) == (
        "readings_dropped",
        policy,
        dropped,
    )
    remaining = [s for run in iter(lambda: box.take(READINGS, 1000), []) for s, _ in run]
    if policy == "thin_oldest":
        assert remaining[:3] == [0, 2, 4]  # every second of the oldest tenth is gone
    else:
        assert remaining[0] == 10  # the oldest tenth is gone
    assert remaining[-1] == 100  # the newest reading is always kept


@pytest.mark.parametrize("policy", ["thin_oldest", "drop_oldest"])
def test_the_bound_never_drops_a_run_handed_out_it_may_be_committed_already(
    tmp_path: Path, policy: str
) -> None:
    # Sent, then the connection went before the ack: the collector may hold these records.
    # Dropping them would make the readings_dropped record count readings that arrive.
    size = len(reading(0.0).model_copy(update={"seq": 10}).model_dump_json())
    box = Outbox(EdgeStore(tmp_path / "o.db"), max_bytes=size * 120, policy=policy)  # type: ignore[arg-type]
    box.append_many([(READINGS, reading(float(v))) for v in range(100)])
    assert box.stats().streams[READINGS].dropped == 0
    assert seqs(box.take(READINGS, 20)) == list(range(20))
    box.requeue(READINGS)  # the reconnect: offered again, still possibly committed
    box.append_many([(READINGS, reading(float(v))) for v in range(100, 140)])
    dropped = {seq for seq in range(140)} - {
        s for run in iter(lambda: box.take(READINGS, 1000), []) for s in seqs(run)
    }
    assert dropped and min(dropped) >= 20
    marker = json.loads(box.take(EVENTS, 1)[0][1])
    assert marker["first_seq"] >= 20
    box.requeue(READINGS)
    assert seqs(box.take(READINGS, 20)) == list(range(20))
    assert box.accept(READINGS, box.epoch, 0, 19) == 20  # all of the run is still there


def test_drop_newest_refuses_readings_while_full_but_keeps_events(tmp_path: Path) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"), max_bytes=1000, policy="drop_newest")
    box.append_many([(READINGS, reading(v)) for v in range(20)])
    assert box.append(READINGS, reading(99)) == -1
    assert box.append(EVENTS, event(1)) == 1  # 0 is the readings_dropped record
    stats = box.stats()
    assert stats.streams[READINGS].dropped == 1 and stats.streams[EVENTS].depth == 2


def test_drop_newest_records_each_run_of_refusals_once_and_spends_their_numbers(
    tmp_path: Path,
) -> None:
    # Refused readings are a hole in the numbering that one readings_dropped record names,
    # extended while the refusals go on and the record has not left: an outage refusing
    # every poll makes one record, not one per poll. The numbers survive a restart.
    size = len(reading(0.0).model_copy(update={"seq": 10}).model_dump_json())
    path = tmp_path / "o.db"
    box = Outbox(EdgeStore(path), max_bytes=size * 10, policy="drop_newest")
    box.append_many([(READINGS, reading(float(v))) for v in range(12)])  # 12: over the bound
    assert box.append_many([(READINGS, reading(1.0)), (READINGS, reading(2.0))]) == [-1, -1]
    assert box.append(READINGS, reading(3.0)) == -1
    (marker_seq, marker), *rest = [(s, json.loads(b)) for s, b in box.take(EVENTS, 10)]
    assert rest == []
    assert (marker["first_seq"], marker["last_seq"], marker["count"]) == (12, 14, 3)
    # Once the record is on its way, the next refusal is a record of its own.
    assert box.append(READINGS, reading(4.0)) == -1
    second = [json.loads(b) for _, b in box.take(EVENTS, 10)]
    assert [(m["first_seq"], m["last_seq"], m["count"]) for m in second] == [(15, 15, 1)]
    assert box.accept(EVENTS, box.epoch, marker_seq, marker_seq) == 1
    box.store.close()
    again = Outbox(EdgeStore(path), max_bytes=size * 100, policy="drop_newest")
    assert again.append(READINGS, reading(5.0)) == 16
    assert again.stats().streams[READINGS].dropped == 4


WRITER = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from edge_agent.outbox import READINGS, Outbox
from edge_agent.store import EdgeStore
from protocols.mqtt.contract import Reading
box = Outbox(EdgeStore(Path(sys.argv[1])))
n = 0
while True:
    box.append_many([(READINGS, Reading(seq=0, time=datetime.now(UTC), line="l",
        batch=None, device="d", tag=f"t{i}", value=float(n))) for i in range(50)])
    n += 1
    print(n, flush=True)
"""


def test_sigkill_mid_append_loses_no_committed_poll_and_keeps_polls_whole(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert proc.stdout is not None
    committed = 0
    deadline = time.monotonic() + 30
    while committed < 200 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    box = Outbox(EdgeStore(path))
    depth = box.depth(READINGS)
    assert depth % 50 == 0  # whole polls only
    assert depth // 50 >= committed  # every poll the writer saw committed is there
    assert seqs(box.take(READINGS, 100_000)) == list(range(depth))


# -- the accept rule: only a run this outbox handed out and still awaits ---------------------


def test_accept_deletes_only_a_run_sent_and_awaited_never_what_an_ack_claims(
    tmp_path: Path,
) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    box.append_many([(READINGS, reading(v)) for v in range(10)])
    assert seqs(box.take(READINGS, 5)) == [0, 1, 2, 3, 4]  # in flight: 0..4; 5..9 not sent
    for first, last in [(0, MAX_SEQ), (0, 3), (1, 4), (0, 9), (5, 9), (4, 5)]:
        assert box.accept(READINGS, box.epoch, first, last) == 0, (first, last)
    assert box.accept(READINGS, "another-epoch", 0, 4) == 0
    assert box.accept(EVENTS, box.epoch, 0, 4) == 0
    assert box.depth(READINGS) == 10
    assert box.accept(READINGS, box.epoch, 0, 4) == 5
    assert box.accept(READINGS, box.epoch, 0, 4) == 0  # settled: a replayed ack does nothing
    box.requeue(READINGS)  # after a requeue nothing is awaited until it is taken again
    assert box.accept(READINGS, box.epoch, 5, 9) == 0
    assert seqs(box.take(READINGS, 10)) == [5, 6, 7, 8, 9]
    assert box.accept(READINGS, box.epoch, 5, 9) == 5
    assert box.depth(READINGS) == 0


def test_a_refused_run_is_quarantined_as_sent_and_the_records_behind_it_flow(
    tmp_path: Path,
) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    box.append_many([(EVENTS, event(n)) for n in range(6)])
    first = box.take(EVENTS, 3)
    assert seqs(box.take(EVENTS, 3)) == [3, 4, 5]
    assert box.quarantine(EVENTS, box.epoch, 0, 1, "not a message") == 0  # not a sent run
    assert box.quarantine(EVENTS, box.epoch, 0, 2, "batch: differs from what was committed") == 3
    assert box.depth(EVENTS) == 3
    assert box.accept(EVENTS, box.epoch, 0, 2) == 0  # gone from the sending queue
    assert box.accept(EVENTS, box.epoch, 3, 5) == 3  # the records behind it flow
    box.requeue(EVENTS)
    assert box.take(EVENTS, 10) == []  # never sent again
    box.store.close()

    again = Outbox(EdgeStore(tmp_path / "o.db"))  # kept on disk, with the reason
    held = again.quarantined()
    assert [(q.stream, q.seq) for q in held] == [(EVENTS, 2), (EVENTS, 1), (EVENTS, 0)]
    assert [json.loads(body) for _, body in first] == [q.record for q in reversed(held)]
    assert {q.reason for q in held} == {"batch: differs from what was committed"}
    stats = again.stats()
    assert stats.quarantined == 3 and stats.depth == 0
    assert stats.last_refusal is not None and (
        stats.last_refusal.first_seq,
        stats.last_refusal.last_seq,
    ) == (0, 2)
    assert any(
        "3 records quarantined" in a and "differs from what was committed" in a
        for a in stats.alarms
    )


# -- what may enter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "named"),
    [
        ({"kind": "batch_started", "time": AT, "line": "l", "batch": "B", "by": "op"}, "not dict"),
        (event(1).model_copy(update={"seq": 7}), "not a record built UNNUMBERED"),
        (reading(1.0).model_dump_json(), "or a CheckedReading, not str"),
    ],
)
def test_only_a_contract_model_built_unnumbered_enters_and_a_refused_call_spends_no_number(
    tmp_path: Path, record: object, named: str
) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    with pytest.raises((TypeError, ValueError), match=named):
        box.append_many([(READINGS, reading(1.0)), (EVENTS, event(0)), (EVENTS, record)])  # type: ignore[list-item]
    assert box.depth(READINGS) == box.depth(EVENTS) == 0  # nothing of the call is kept
    assert box.append(EVENTS, event(2)) == 0  # and no number was spent
    assert box.append(READINGS, reading(2.0)) == 0
    box.store.close()
    assert Outbox(EdgeStore(tmp_path / "o.db")).append(EVENTS, event(3)) == 1


def test_an_ack_refusing_some_records_quarantines_those_and_deletes_the_committed_rest(
    tmp_path: Path,
) -> None:
    box = Outbox(EdgeStore(tmp_path / "o.db"))
    box.append_many([(EVENTS, event(n)) for n in range(6)])
    assert seqs(box.take(EVENTS, 6)) == [0, 1, 2, 3, 4, 5]
    runs = [(1, 1, "by: text contains a NUL"), (4, 5, "time: past the clock")]
    assert box.quarantine(EVENTS, box.epoch, 0, 5, "3 records refused", runs) == 3
    assert box.depth(EVENTS) == 0  # 0, 2 and 3 were committed: gone
    held = {q.seq: q.reason for q in box.quarantined()}
    assert held == {
        1: "by: text contains a NUL",
        4: "time: past the clock",
        5: "time: past the clock",
    }
    assert box.stats().quarantined == 3
