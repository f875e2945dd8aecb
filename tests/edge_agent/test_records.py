"""The edge's records: contract models, checked as they are built, numbered by the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from edge_agent.outbox import numbered
from edge_agent.records import (
    RECORD_MODELS,
    UNNUMBERED,
    CheckedReading,
    EdgeRecord,
    ReadingForm,
    RecordRefused,
    TakenAt,
    contract_checked,
)
from protocols.mqtt.contract import (
    BatchEvent,
    BizTransaction,
    DeviceEvent,
    Item,
    ObjectEventRecord,
    Reading,
    ReadingsDropped,
    Record,
    RfidSighting,
    TagSpec,
    TagSpecs,
    TransformationEventRecord,
)
from tests.hypothesis_profiles import load_from_env

load_from_env()
AT = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
RECORD: TypeAdapter[Record] = TypeAdapter(Record)
LOT = Item(epc_class="https://id.gs1.org/01/09506000134352/10/L7", gtin="09506000134352", lot="L7")

# One record of every kind the edge makes, as the edge builds it.
EVERY_KIND: list[EdgeRecord] = [
    Reading(seq=UNNUMBERED, time=AT, line="l", batch="B-1", device="d", tag="t", value=1.5),
    Reading(
        seq=UNNUMBERED,
        time=AT,
        device_time=AT,
        line="l",
        batch=None,
        device="d",
        tag="t",
        value=None,
        quality="bad",
        detail="comm fault",
    ),
    BatchEvent(seq=UNNUMBERED, kind="batch_ended", time=AT, line="l", batch="B-1", by="op"),
    DeviceEvent(seq=UNNUMBERED, kind="device_offline", time=AT, line="l", device="d"),
    ReadingsDropped(
        seq=UNNUMBERED,
        time=AT,
        stream="readings",
        count=5,
        first_seq=0,
        last_seq=9,
        policy="thin_oldest",
    ),
    ObjectEventRecord(
        seq=UNNUMBERED,
        time=AT,
        event_id="e1",
        action="OBSERVE",
        biz_step="receiving",
        read_point="dock-1",
        items=[LOT, Item(raw="E280", unknown_reason="no EPC header")],
        biz_transactions=[BizTransaction(type="po", id="PO-1")],
        sightings=[
            RfidSighting(epc_hex="E280", first_seen=AT, last_seen=AT, count=3, antennas=[1])
        ],
    ),
    TransformationEventRecord(
        seq=UNNUMBERED,
        time=AT,
        event_id="e2",
        transformation_id="B-1",
        read_point="l",
        line="l",
        batch="B-1",
        inputs=[LOT],
        outputs=[Item(lot="B-1", raw="B-1")],
        started_at=AT,
    ),
    TagSpecs(seq=UNNUMBERED, time=AT, specs=[TagSpec(device="d", tag="t", low=1.0, high=2.0)]),
]


def test_every_record_model_is_one_the_edge_builds() -> None:
    assert {type(r) for r in EVERY_KIND} == set(RECORD_MODELS)


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda r: str(r.kind))
@pytest.mark.parametrize("seq", [0, 1, 10, 123_456_789, 2**63 - 1])
def test_the_outbox_numbers_exactly_what_the_model_serialises(record: EdgeRecord, seq: int) -> None:
    """The outbox's splice gives what the model with its number serialises, byte for byte:
    this fails if the contract ever moves `seq` from second place."""
    body = numbered(record.model_dump_json(), seq)
    assert body == record.model_copy(update={"seq": seq}).model_dump_json()
    assert RECORD.validate_json(body) == record.model_copy(update={"seq": seq})


def test_a_record_built_with_a_number_of_its_own_is_not_numbered_again() -> None:
    with pytest.raises(ValueError, match="not a record built UNNUMBERED"):
        numbered(EVERY_KIND[2].model_copy(update={"seq": 4}).model_dump_json(), 5)


def event(**changed: object) -> BatchEvent:
    fields: dict[str, object] = {"seq": UNNUMBERED, "kind": "batch_started", "time": AT}
    return BatchEvent(**(fields | {"line": "l", "batch": "B", "by": "op"} | changed))  # type: ignore[arg-type]


def reading(**changed: object) -> Reading:
    fields: dict[str, object] = {"seq": UNNUMBERED, "time": AT, "line": "l", "batch": None}
    fields |= {"device": "d", "tag": "t", "value": 1.0}
    return Reading(**(fields | changed))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: event(batch="B\x00\x00"), "batch: Value error, text contains a NUL"),
        (lambda: event(by="x" * 129), "by: String should have at most 128 characters"),
        (lambda: reading(value=float("nan")), "value: Input should be a finite number"),
        (lambda: reading(value=None), "must have a value"),
        (lambda: reading(time=datetime(2026, 1, 1)), "time: Value error, timestamp must"),
        (lambda: reading(time=datetime(9999, 1, 1, tzinfo=UTC)), "outside 2000-2099"),
        (lambda: reading(line="line 1"), "line: String should match pattern"),
        (lambda: reading(colour="red"), "colour: Extra inputs are not permitted"),
        (lambda: Item(quantity=1.0), "an item needs epc, epc_class or at least its raw"),
    ],
)
def test_a_record_the_contract_refuses_cannot_be_built_and_the_refusal_names_the_field(
    build: object, named: str
) -> None:
    with pytest.raises(RecordRefused) as refused, contract_checked("some_kind"):
        build()  # type: ignore[operator]
    assert named in str(refused.value), str(refused.value)
    assert str(refused.value).startswith(
        "some_kind record refused by the message contract (trace.v1)"
    )


# -- readings: a form per tag, checked once; the text the model would serialise ---------------

# Text the contract takes as a unit or a batch (any printable or not, quotes, backslashes,
# non-ASCII), then text it refuses (NUL, a lone surrogate, too long).
FREE_TEXT = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=["Cs"]),
    min_size=1,
    max_size=32,
)
TEXT = st.one_of(
    st.sampled_from(["l", "line-1", "t:0.x_y", "Cel", "°C", "m³/h", 'q"uote\\', "\u2028"]),
    FREE_TEXT,
    st.sampled_from(["", " ", "a" * 129, "a\x00", "\ud800", "é\x1f\x7f"]),
    st.text(max_size=40),
)
# Mostly names the contract takes, so that most examples get past the form.
IDENTIFIERS = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:\-]{1,128}", fullmatch=True),
    st.sampled_from(["l", "d", "t", "a" * 128]),
    st.sampled_from(["line 1", "", "a" * 129, "é"]),
)
GOOD_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
TIMES = st.one_of(
    GOOD_TIMES,
    GOOD_TIMES,
    st.datetimes(timezones=st.timezones()),  # any offset, any year
    st.datetimes(),  # naive: refused
)
VALUES = st.one_of(
    st.floats(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-3, max_value=1e-3),
    st.floats(min_value=1e15, max_value=1e17),
    st.sampled_from([0.0, -0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308]),
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.sampled_from(["12.5", "abc", "", [1.0], {"v": 1}, b"1"]),
)
QUALITIES = st.one_of(
    st.sampled_from(["good", "uncertain", "bad"]), st.sampled_from(["fine", "", None, 1])
)
DETAILS = st.one_of(st.none(), st.none(), TEXT, st.just("x" * 501))
NAME = st.from_regex(r"[A-Za-z0-9._:\-]{1,128}", fullmatch=True)
OPTIONAL_TEXT = st.one_of(st.none(), FREE_TEXT)
ANY_TEXT = st.one_of(st.none(), TEXT)
# What a tag's readings share (line, batch, device, tag, unit) and what each reading has
# (time, value, quality, device_time, detail): three times in four the shape of a real one,
# else anything.
FORMS = st.one_of(
    *[st.tuples(NAME, OPTIONAL_TEXT, NAME, NAME, OPTIONAL_TEXT)] * 3,
    st.tuples(IDENTIFIERS, ANY_TEXT, IDENTIFIERS, IDENTIFIERS, ANY_TEXT),
)
TYPICAL_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-3, max_value=1e-3),  # written with an exponent: 1e-7
    st.floats(min_value=1e15, max_value=1e17),  # 1e+16
    st.integers(-(10**6), 10**6).map(float),
)
TYPICAL = st.tuples(
    GOOD_TIMES,
    TYPICAL_VALUES,
    st.sampled_from(["good", "uncertain", "bad"]),
    st.one_of(st.none(), GOOD_TIMES),
    st.none(),
)
HOSTILE = (TIMES, VALUES, QUALITIES, st.one_of(st.none(), TIMES), DETAILS)


@st.composite
def one_field_hostile(draw: st.DrawFn) -> tuple[object, ...]:
    """A typical reading with one of its fields replaced by anything."""
    fields = list(draw(TYPICAL))
    which = draw(st.integers(0, len(fields) - 1))
    fields[which] = draw(HOSTILE[which])
    return tuple(fields)


# Each reading (time, value, quality, device_time, detail): typical, typical but for one
# field, or anything.
READINGS = st.one_of(TYPICAL, one_field_hostile(), one_field_hostile(), st.tuples(*HOSTILE))


FORM = ("l", "B-1", "d", "t", "Cel")


@given(form_fields=FORMS, reading_fields=READINGS, seq=st.integers(0, 2**63 - 1))
@example(FORM, (AT, float("inf"), "bad", None, None), 0)
@example(FORM, (AT, float("nan"), "uncertain", None, None), 0)
@example(FORM, (AT, 1e-7, "good", None, None), 0)
@example(FORM, (AT, 1e16, "good", AT, None), 0)
@example(FORM, (AT, 1.0, None, None, None), 0)
@example(FORM, (AT, None, "good", None, None), 0)
@example(FORM, (AT, None, "bad", None, None), 0)
@example(FORM, (AT, 1.0, "good", None, "said the PLC"), 0)
@example(FORM, (AT, 1.0, "good", datetime(2026, 1, 1), None), 0)
@example(FORM, (AT, 1.0, "good", datetime(1601, 1, 1, tzinfo=UTC), None), 0)
@example(FORM, (datetime(2026, 1, 1), 1.0, "good", None, None), 0)
@example(FORM, (AT, True, "good", None, None), 0)
@example(FORM, (AT, 3, "good", None, None), 0)
def test_a_checked_reading_is_what_the_model_serialises_and_refuses_what_the_model_refuses(
    form_fields: tuple[str, str | None, str, str, str | None],
    reading_fields: tuple[datetime, object, object, datetime | None, str | None],
    seq: int,
) -> None:
    """Whatever a driver hands over: the form's text is the Reading model's JSON byte for
    byte, and what the model refuses the form refuses, in the model's words."""
    line, batch, device, tag, unit = form_fields
    at, value, quality, device_time, detail = reading_fields
    fields: dict[str, object] = {"time": at, "device_time": device_time, "line": line}
    fields |= {"batch": batch}
    fields |= {"device": device, "tag": tag, "value": value, "unit": unit}
    fields |= {"quality": quality, "detail": detail}
    try:
        model = Reading(seq=UNNUMBERED, **fields)  # type: ignore[arg-type]
    except ValidationError as err:
        expected: str | RecordRefused = str(RecordRefused.of("reading", err))
    else:
        expected = model.model_copy(update={"seq": seq}).model_dump_json()
    try:
        form = ReadingForm(line, batch, device, tag, unit)
    except RecordRefused as refused:  # the tag's constant fields: the model refuses them too
        assert isinstance(expected, str) and expected.startswith("reading record refused")
        for problem in refused.problems:
            assert problem in expected
        return
    checked: CheckedReading | RecordRefused
    try:
        checked = form.reading(TakenAt(at), value, quality, device_time, detail)
    except RecordRefused as refused:
        checked = refused
    if isinstance(checked, RecordRefused):
        assert str(checked) == expected
    else:
        assert checked.body(seq) == expected
        assert checked.model(seq) == model.model_copy(update={"seq": seq})


def test_most_readings_are_checked_at_a_glance_without_building_the_model() -> None:
    """The hot path: a poll's time checked once, a float value, no detail."""
    form = ReadingForm("l", "B-1", "d", "t", "Cel")
    taken = TakenAt(AT)
    for value, quality in [(20.5, "good"), (1e-7, "uncertain"), (None, "bad")]:
        checked = form.at_a_glance(taken, value, quality)
        assert checked is not None
        assert checked.model() == reading(batch="B-1", value=value, unit="Cel", quality=quality)
    assert form.at_a_glance(taken, 20.5, "good", device_time=AT) is not None
    # Left to the model: an int, a detail, a naive device clock, an unknown quality.
    for args in [(20, "good"), ("20.5", "good"), (float("nan"), "good"), (None, "good")]:
        assert form.at_a_glance(taken, *args) is None
    assert form.at_a_glance(taken, 20.5, "good", detail="noisy") is None
    assert form.at_a_glance(taken, 20.5, "good", device_time=datetime(2026, 1, 1)) is None
    assert form.at_a_glance(taken, 20.5, "fine") is None
    assert form.at_a_glance(TakenAt(datetime(2026, 1, 1)), 20.5, "good") is None


@pytest.mark.parametrize(
    ("form", "value", "quality", "extra", "named"),
    [
        (("l", None, "d", "t", None), "abc", "good", {}, "value: Input should be a valid number"),
        (("l", None, "d", "t", None), [1.0], "good", {}, "value: Input should be a valid number"),
        (("l", None, "d", "t", None), float("inf"), "good", {}, "value: Input should be a finite"),
        (("l", None, "d", "t", None), None, "good", {}, "must have a value"),
        (("l", None, "d", "t", None), 1.0, "fine", {}, "quality: Input should be 'good'"),
        (
            ("l", None, "d", "t", None),
            1.0,
            "good",
            {"device_time": datetime(2026, 1, 1)},
            "device_time: Value error, timestamp must carry a UTC offset",
        ),
        (
            ("l", None, "d", "t", None),
            1.0,
            "bad",
            {"detail": "x" * 501},
            "detail: String should have at most 500 characters",
        ),
    ],
)
def test_a_mistyped_reading_is_refused_at_the_edge_naming_the_field(
    form: tuple[str, str | None, str, str, str | None],
    value: object,
    quality: object,
    extra: dict[str, Any],
    named: str,
) -> None:
    with pytest.raises(RecordRefused) as refused:
        ReadingForm(*form).reading(TakenAt(AT), value, quality, **extra)
    assert named in str(refused.value), str(refused.value)
    assert str(refused.value).startswith("reading record refused by the message contract")


@pytest.mark.parametrize(
    ("form", "named"),
    [
        (("line 1", None, "d", "t", None), "line: String should match pattern"),
        (("l", "B\x00", "d", "t", None), "batch: Value error, text contains a NUL"),
        (("l", None, "", "t", None), "device: String should have at least 1 character"),
        (("l", None, "d", "t" * 129, None), "tag: String should have at most 128 characters"),
        (("l", None, "d", "t", "u" * 33), "unit: String should have at most 32 characters"),
        (("l", None, "d", 7, None), "tag: Input should be a valid string"),
    ],
)
def test_a_tag_the_contract_refuses_is_refused_when_its_form_is_made(
    form: tuple[str, str | None, str, str, str | None], named: str
) -> None:
    with pytest.raises(RecordRefused) as refused:
        ReadingForm(*form)
    assert named in str(refused.value), str(refused.value)
