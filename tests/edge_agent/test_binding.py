"""Binding: every reading gets the line's batch at the moment it is taken, or none; a PLC
batch tag drives batch start and end and is not itself a reading."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.batch_context import BatchContext
from edge_agent.binding import BatchTag, Binder
from edge_agent.outbox import EVENTS, READINGS, Outbox
from protocols.driver import Sample

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "o.db")


def records(outbox: Outbox, stream: str) -> list[dict]:
    return [json.loads(b) for _, b in outbox.take(stream, 1000)]


def test_readings_carry_the_active_batch_or_explicitly_none(outbox: Outbox) -> None:
    binder = Binder(BatchContext(outbox.db, ["l1"]), outbox)
    temp = Sample("temp", 70.0, "Cel", device_time=T0 - timedelta(milliseconds=5))
    binder.readings("l1", "plc", [temp], T0)
    binder.start_batch("l1", "B-1", "op")
    binder.readings("l1", "plc", [temp, Sample("p", None, "bar", "bad", detail="exc 2")], T0)
    got = [(r["batch"], r["tag"], r["quality"], r["detail"]) for r in records(outbox, READINGS)]
    assert got == [
        (None, "temp", "good", None),
        ("B-1", "temp", "good", None),
        ("B-1", "p", "bad", "exc 2"),
    ]
    first = records(outbox, READINGS) or None
    assert first is None  # all taken already
    outbox.requeue(READINGS)
    r0 = records(outbox, READINGS)[0]
    assert (r0["time"], r0["device_time"]) == (
        T0.isoformat(),
        (T0 - timedelta(milliseconds=5)).isoformat(),
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # A numeric batch number: 0 is idle, a change ends one batch and starts the next.
        (
            [0.0, 1001.0, 1001.0, 1002.0, 0.0],
            [
                ("batch_started", "WO-1001"),
                ("batch_ended", "WO-1001"),
                ("batch_started", "WO-1002"),
                ("batch_ended", "WO-1002"),
            ],
        ),
        # A string batch id: empty is idle.
        (
            ["", "LOT-A", "LOT-A ", "LOT-B", ""],
            [
                ("batch_started", "LOT-A"),
                ("batch_ended", "LOT-A"),
                ("batch_started", "LOT-B"),
                ("batch_ended", "LOT-B"),
            ],
        ),
    ],
)
def test_a_plc_batch_tag_starts_and_ends_batches(
    outbox: Outbox, values: list, expected: list
) -> None:
    binder = Binder(BatchContext(outbox.db, ["l1"]), outbox, {"plc": BatchTag("batch", "WO-")})
    for i, v in enumerate(values):
        batch_sample = (
            Sample("batch", None, None, text=v) if isinstance(v, str) else Sample("batch", v, None)
        )
        binder.readings(
            "l1", "plc", [batch_sample, Sample("temp", 60.0 + i, "Cel")], T0 + timedelta(seconds=i)
        )
    events = records(outbox, EVENTS)
    assert [(e["kind"], e["batch"]) for e in events] == expected
    assert all(e["by"] == "plc:plc/batch" for e in events)
    readings = records(outbox, READINGS)
    assert [r["tag"] for r in readings] == ["temp"] * len(values)  # the batch tag is no reading
    # The reading taken in the same poll as the change is bound to the new batch.
    assert readings[1]["batch"] == expected[0][1]


def test_a_bad_batch_tag_value_changes_nothing(outbox: Outbox) -> None:
    binder = Binder(BatchContext(outbox.db, ["l1"]), outbox, {"plc": BatchTag("batch")})
    binder.readings("l1", "plc", [Sample("batch", 7.0, None)], T0)
    binder.readings("l1", "plc", [Sample("batch", None, None, "bad", detail="comm")], T0)
    assert [e["kind"] for e in records(outbox, EVENTS)] == ["batch_started"]
    active = binder.context.active("l1")
    assert active is not None and active.batch_id == "7"
