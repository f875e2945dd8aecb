"""The message contract against hostile bytes: whatever arrives on an edge's data topic or
its ack topic, `Envelope` and `Ack` either accept it or refuse it with pydantic's
ValidationError, and what they accept is storable (numbers within bigint and finite, text
without NUL or lone surrogates, times within the contract's window); the collector's
`messages.read` refuses with `Rejected` only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from cloud_collector import messages
from protocols.mqtt import topics
from protocols.mqtt.contract import EARLIEST, LATEST, MAX_SEQ, Ack, Envelope
from tests.hostile_input import HOSTILE_JSON, Raw, damaged, deep, dumps, one_value_replaced

T = "2026-11-25T10:00:00+00:00"
ITEM = {"epc_class": "https://id.gs1.org/01/09501101530003/10/L1", "gtin": "09501101530003"}
RECORDS: list[dict[str, Any]] = [
    {"kind": "reading", "time": T, "line": "L1", "batch": "B1", "device": "d", "tag": "t",
     "value": 1.5, "unit": "degC"},
    {"kind": "batch_started", "time": T, "line": "L1", "batch": "B1", "by": "op"},
    {"kind": "device_offline", "time": T, "line": "L1", "device": "d", "detail": "gone"},
    {"kind": "readings_dropped", "time": T, "stream": "readings", "count": 2, "first_seq": 0,
     "last_seq": 1, "policy": "drop_oldest"},
    {"kind": "object_event", "time": T, "event_id": "ev1", "action": "OBSERVE",
     "biz_step": "receiving", "read_point": "dock-1", "items": [ITEM],
     "sightings": [{"epc_hex": "3074257BF7194E4000001A85", "first_seen": T, "last_seen": T,
                    "count": 3, "antennas": [1]}]},
    {"kind": "transformation_event", "time": T, "event_id": "ev2", "transformation_id": "B1",
     "read_point": "L1", "line": "L1", "batch": "B1", "inputs": [ITEM], "outputs": [ITEM]},
    {"kind": "tag_specs", "time": T, "specs": [{"device": "d", "tag": "t", "low": 0, "high": 9}]},
]  # fmt: skip
ENVELOPE = {
    "contract": "trace.v1",
    "edge_id": "edge-1",
    "stream": "events",
    "epoch": "e1",
    "records": [{**record, "seq": 7 + i} for i, record in enumerate(RECORDS)],
}
ACK = {
    "contract": "trace.v1",
    "edge_id": "edge-1",
    "stream": "events",
    "epoch": "e1",
    "first_seq": 7,
    "last_seq": 13,
    "refused": "invalid",
}
TOPIC = topics.data("edge-1", "events")


def storable(value: Any, where: str = "$") -> None:
    """What the collector stores and the edge keeps in SQLite: bigint, finite floats, text
    PostgreSQL takes, times within the contract's window."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        assert -MAX_SEQ - 1 <= value <= MAX_SEQ, where
    elif isinstance(value, float):
        assert value == value and abs(value) != float("inf"), where
    elif isinstance(value, str):
        assert "\x00" not in value, where
        value.encode("utf-8")
    elif isinstance(value, datetime):
        assert value.tzinfo is not None and EARLIEST <= value < LATEST, where
    elif isinstance(value, dict):
        for key, inner in value.items():
            storable(inner, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, inner in enumerate(value):
            storable(inner, f"{where}[{i}]")


def validated(model: type[BaseModel], payload: bytes) -> BaseModel | None:
    try:
        accepted = model.model_validate_json(payload)
    except ValidationError:
        return None
    storable(accepted.model_dump())
    return accepted


def test_the_valid_messages_are_valid() -> None:
    envelope = validated(Envelope, dumps(ENVELOPE))
    assert isinstance(envelope, Envelope) and len(envelope.records) == len(RECORDS)
    assert validated(Ack, dumps(ACK)) is not None
    assert messages.read(TOPIC, dumps(ENVELOPE)).last_seq == 13


@given(st.binary(max_size=2000))
def test_arbitrary_bytes(payload: bytes) -> None:
    validated(Envelope, payload)
    validated(Ack, payload)


@given(HOSTILE_JSON)
def test_hostile_json(value: Any) -> None:
    validated(Envelope, dumps(value))
    validated(Ack, dumps(value))


@given(one_value_replaced(ENVELOPE))
def test_an_envelope_with_one_value_replaced(document: Any) -> None:
    validated(Envelope, dumps(document))


@given(one_value_replaced(ACK))
def test_an_ack_with_one_value_replaced(document: Any) -> None:
    validated(Ack, dumps(document))


@given(damaged(dumps(ENVELOPE)))
def test_an_envelope_damaged_in_transit(payload: bytes) -> None:
    validated(Envelope, payload)


@given(damaged(dumps(ACK)))
def test_an_ack_damaged_in_transit(payload: bytes) -> None:
    validated(Ack, payload)


@pytest.mark.parametrize("depth", [10, 100, 1000, 100_000])
def test_deep_nesting_anywhere(depth: int) -> None:
    for document in (deep(depth), {**ENVELOPE, "records": [deep(depth)]}):
        assert validated(Envelope, dumps(document)) is None
    assert validated(Ack, dumps({**ACK, "refused": deep(depth)})) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("first_seq", 2**63),
        ("last_seq", 2**64 + 1),
        ("first_seq", -1),
        ("first_seq", Raw("1" * 5000)),
        ("first_seq", float("nan")),
        ("first_seq", 1e400),
        ("refused", "a\x00"),
        ("refused", "\ud800"),
        ("edge_id", 7),
    ],
)
def test_an_ack_past_every_bound_is_refused(field: str, value: Any) -> None:
    assert validated(Ack, dumps({**ACK, field: value})) is None


def envelope_with(seq: Any = 7, **fields: Any) -> bytes:
    record = {**RECORDS[0], "seq": seq, **fields}
    return dumps({**ENVELOPE, "records": [record]})


@pytest.mark.parametrize(
    "payload",
    [
        envelope_with(seq=2**63),
        envelope_with(seq=Raw("1" * 5000)),
        envelope_with(value=float("nan")),
        envelope_with(value=float("inf")),
        envelope_with(batch="B\x00\x00"),
        envelope_with(batch="\udfff"),
        envelope_with(time="9999-12-31T23:59:59+00:00"),
        envelope_with(time="1970-01-01T00:00:00+00:00"),
        envelope_with(time="2026-11-25T10:00:00"),
    ],
)
def test_an_envelope_past_every_bound_is_refused(payload: bytes) -> None:
    assert validated(Envelope, payload) is None


def parsed(topic: str, payload: bytes) -> messages.Message | None:
    """What the collector reads of a message: a range of records, each valid and storable
    or refused with its reason; or a dead letter (Rejected) that says why."""
    try:
        message = messages.read(topic, payload)
    except messages.Rejected as rejected:
        reason = rejected.reason
        assert reason  # a dead letter must say why
        return None
    edge_id, stream = topics.parse_data(topic)
    assert (message.edge_id, message.stream) == (edge_id, stream)
    assert len(message.records) == message.last_seq - message.first_seq + 1
    for offset, record in enumerate(message.records):
        if record is None:
            assert message.refused[message.first_seq + offset]  # refused, with its reason
        else:
            storable(record.model_dump())
    return message


HOSTILE_TOPICS = st.one_of(
    st.just(TOPIC),
    st.text(max_size=80),
    st.builds(topics.data, st.text(max_size=20), st.text(max_size=20)),
)


@given(HOSTILE_TOPICS, one_value_replaced(ENVELOPE))
def test_the_collector_parses_or_rejects(topic: str, document: Any) -> None:
    parsed(topic, dumps(document))


@given(HOSTILE_TOPICS, st.one_of(st.binary(max_size=500), damaged(dumps(ENVELOPE))))
def test_the_collector_parses_or_rejects_bytes(topic: str, payload: bytes) -> None:
    parsed(topic, payload)


def test_the_time_window_is_what_the_invariant_checks() -> None:
    # A guard on the invariant itself: it must notice what the contract must refuse.
    with pytest.raises(AssertionError):
        storable({"t": datetime(1999, 12, 31, tzinfo=UTC)})
    with pytest.raises(AssertionError):
        storable({"seq": 2**63})
    with pytest.raises(AssertionError):
        storable(["a\x00"])
