"""Binding: every reading gets the line's batch at the moment it is taken, or none; a PLC
batch tag drives batch start and end and is not itself a reading."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent import binding
from edge_agent.batch_context import BatchContext
from edge_agent.binding import BatchTag, Binder
from edge_agent.outbox import EVENTS, READINGS, Outbox
from edge_agent.store import EdgeStore
from protocols.driver import Sample

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(EdgeStore(tmp_path / "o.db"))


def records(outbox: Outbox, stream: str) -> list[dict]:
    return [json.loads(b) for _, b in outbox.take(stream, 1000)]


def test_readings_carry_the_active_batch_or_explicitly_none(outbox: Outbox) -> None:
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox)
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
    # Times are datetimes in every record, written as the contract's model writes them.
    assert (r0["time"], r0["device_time"]) == (
        "2026-11-25T08:00:00Z",
        "2026-11-25T07:59:59.995000Z",
    )
    assert (datetime.fromisoformat(r0["time"]), datetime.fromisoformat(r0["device_time"])) == (
        T0,
        T0 - timedelta(milliseconds=5),
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
        # A string batch id: empty is idle; a PLC string's NUL padding is no part of it.
        (
            ["", "LOT-A", "LOT-A ", "LOT-A\x00\x00\x00\x00", "LOT-B", "\x00\x00"],
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
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox, {"plc": BatchTag("batch", "WO-")})
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
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox, {"plc": BatchTag("batch")})
    binder.readings("l1", "plc", [Sample("batch", 7.0, None)], T0)
    binder.readings("l1", "plc", [Sample("batch", None, None, "bad", detail="comm")], T0)
    assert [e["kind"] for e in records(outbox, EVENTS)] == ["batch_started"]
    active = binder.context.active("l1")
    assert active is not None and active.batch_id == "7"


def test_a_plc_batch_string_the_contract_refuses_keeps_the_line_and_is_counted(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox, {"plc": BatchTag("batch")})
    binder.readings("l1", "plc", [Sample("batch", None, None, text="WO-1")], T0)
    for _ in range(3):  # a PLC that keeps serving a garbled string every poll
        n = binder.readings(
            "l1",
            "plc",
            [Sample("batch", None, None, text="W" * 200), Sample("temp", 61.0, "Cel")],
            T0,
        )
        assert n == 1  # the poll's readings still go in
    assert [(e["kind"], e["batch"]) for e in records(outbox, EVENTS)] == [("batch_started", "WO-1")]
    assert [r["batch"] for r in records(outbox, READINGS)] == ["WO-1"] * 3
    assert binder.refusals.count == {"plc": 3}
    assert "at most 128 characters" in binder.refusals.last["plc"]
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1  # no flood


def test_values_the_contract_cannot_carry_become_flagged_readings_not_failures(
    outbox: Outbox,
) -> None:
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox)
    samples = [
        Sample("t1", float("nan"), "Cel"),
        Sample("t2", float("-inf"), "Cel"),
        Sample("t3", 5.0, "Cel", device_time=datetime(1601, 1, 1, tzinfo=UTC)),  # OPC UA zero
        Sample("t4", None, "Cel", "bad", detail="comm\x00fault " + "x" * 1000),
    ]
    assert binder.readings("l1", "plc", samples, T0) == 4
    got = {r["tag"]: r for r in records(outbox, READINGS)}
    assert (got["t1"]["value"], got["t1"]["quality"]) == (None, "bad")
    assert "nan" in got["t1"]["detail"] and "inf" in got["t2"]["detail"]
    assert (got["t3"]["value"], got["t3"]["quality"], got["t3"]["device_time"]) == (
        5.0,
        "uncertain",
        None,
    )
    assert "device clock says 1601-01-01" in got["t3"]["detail"]
    assert got["t4"]["detail"].startswith("commfault") and len(got["t4"]["detail"]) == 500


def test_a_reading_the_contract_refuses_is_counted_and_the_poll_goes_on(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox)
    poll = [Sample("temp", 60.0, "Cel"), Sample("speed", 3.0, "revolutions per minute, " * 3)]
    for _ in range(5):
        assert binder.readings("l1", "plc", poll, T0) == 1
    assert [r["tag"] for r in records(outbox, READINGS)] == ["temp"] * 5
    assert binder.refusals.count == {"plc": 5}
    assert "reading of speed" in binder.refusals.last["plc"]
    assert "unit: String should have at most 32 characters" in binder.refusals.last["plc"]
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("sample", "named"),
    [
        (Sample("t", "61.5x", "Cel"), "value: Input should be a valid number"),  # type: ignore[arg-type]
        (Sample("t", [61.5], "Cel"), "value: Input should be a valid number"),  # type: ignore[arg-type]
        (Sample("t", 61.5, "Cel", "fine"), "quality: Input should be 'good'"),  # type: ignore[arg-type]
        (Sample("t", 61.5, 42), "unit: Input should be a valid string"),  # type: ignore[arg-type]
        (Sample(7, 61.5, "Cel"), "tag: Input should be a valid string"),  # type: ignore[arg-type]
        (Sample(["t"], 61.5, "Cel"), "tag: Input should be a valid string"),  # type: ignore[arg-type]
        (Sample("t t", 61.5, "Cel"), "tag: String should match pattern"),
        (Sample("t", None, "Cel"), "a reading with quality 'good' must have a value"),
        (Sample("t", None, "Cel", "bad", detail=42), "detail: Input should be a valid string"),  # type: ignore[arg-type]
        (Sample("t", 1.5, "Cel", device_time="yesterday"), "device_time: Input should be a valid"),  # type: ignore[arg-type]
    ],
)
def test_a_mistyped_sample_is_refused_before_the_outbox_naming_the_field(
    outbox: Outbox, sample: Sample, named: str
) -> None:
    """A driver that hands over a wrong type (a codec bug, a string where a number
    belongs): the reading is refused at the edge, counted with the field and the problem,
    and the rest of the poll is kept."""
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox)
    for _ in range(2):
        assert binder.readings("l1", "plc", [sample, Sample("ok", 1.5, "Cel")], T0) == 1
    assert [r["tag"] for r in records(outbox, READINGS)] == ["ok", "ok"]
    assert binder.refusals.count == {"plc": 2}
    assert named in binder.refusals.last["plc"], binder.refusals.last["plc"]
    assert "reading record refused by the message contract" in binder.refusals.last["plc"]


def test_the_checked_forms_of_tags_are_bounded(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A form is kept per line, batch and device: years of batches must not grow memory."""
    monkeypatch.setattr(binding, "MAX_FORM_SETS", 3)
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox)
    for n in range(10):
        binder.start_batch("l1", f"B{n}", "op", T0)
        assert binder.readings("l1", "plc", [Sample("t", float(n), "Cel")], T0) == 1
        binder.end_batch("l1", "op", T0)
        assert len(binder._forms) <= 3
    assert [(r["batch"], r["value"]) for r in records(outbox, READINGS)] == [
        (f"B{n}", float(n)) for n in range(10)
    ]


def test_a_device_error_of_any_length_or_content_is_recorded(outbox: Outbox) -> None:
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox)
    binder.device_event("l1", "plc", False, "timeout \x00" + "e" * 2000)
    (event,) = records(outbox, EVENTS)
    assert event["kind"] == "device_offline" and len(event["detail"]) == 500
    assert "\x00" not in event["detail"]


def test_a_plc_batch_change_by_a_device_with_a_long_name_is_still_made(outbox: Outbox) -> None:
    device, tag = "plc-" + "d" * 124, "batch-" + "t" * 122  # both at the contract's 128
    binder = Binder(BatchContext(outbox.store, ["l1"]), outbox, {device: BatchTag(tag)})
    binder.readings("l1", device, [Sample(tag, None, None, text="WO-5")], T0)
    [started] = records(outbox, EVENTS)
    assert started["batch"] == "WO-5" and started["by"] == f"plc:{device}/{tag}"[:128]
