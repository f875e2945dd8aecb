"""The collector's reader of edge statuses against hostile bytes: whatever arrives on a
status topic, `parse_status` returns an EdgeStatus of the topic's edge that the database
can store, or refuses it with StatusRefused and a reason; nothing else escapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_collector.edge_status import StatusRefused, parse_status, topic_edge
from protocols.mqtt import topics
from protocols.mqtt.contract import EdgeStatus
from tests.hostile_input import HOSTILE_JSON, Raw, damaged, deep, dumps, one_value_replaced
from tests.hypothesis_profiles import load_from_env
from tests.protocols.mqtt.test_contract_properties import storable

load_from_env()

T = "2026-11-25T10:00:00+00:00"
STATUS: dict[str, Any] = {
    "contract": "trace.v1",
    "edge_id": "edge-1",
    "state": "online",
    "time": T,
    "version": "0.1.0",
    "outbox_depth": 12,
    "outbox_oldest_age_s": 1.5,
    "outbox_dropped": 0,
    "quarantined": 0,
    "alarms": ["device plc offline since 2026-11-25T09:59:00+00:00: timed out"],
    "last_ack_at": T,
    "session": "2026-11-25T09:00:00+00:00",
    "interval_s": 10.0,
    "lines": [{"line": "line-1", "batch": "WO-1", "batch_started_at": T}, {"line": "line-2"}],
    "devices": [
        {
            "device": "reactor-plc",
            "station": "line-1",
            "connected": True,
            "last_read_at": T,
            "failures": 2,
            "last_error": "timed out",
            "values": [
                {"tag": "temperature", "value": 72.5, "unit": "degC", "time": T},
                {"tag": "pressure", "quality": "bad", "time": T},
            ],
        }
    ],
}
TOPIC = topics.status("edge-1")
MAX = 64 * 1024


def parsed(topic: str, payload: bytes, max_bytes: int = MAX) -> EdgeStatus | None:
    try:
        status = parse_status(topic, payload, max_bytes)
    except StatusRefused as err:
        refused = err
    else:
        refused = None
    if refused is not None:
        assert str(refused), "a refusal must say why"
        assert refused.kind in {"topic", "oversized", "empty", "invalid", "edge_id"}
        return None
    assert status.edge_id == topic_edge(topic)
    assert len(payload) <= max_bytes
    storable(status.model_dump())
    # What the keeper stores (jsonb) reads back as the same status.
    assert EdgeStatus.model_validate(json.loads(status.model_dump_json())) == status
    return status


def test_the_valid_status_is_valid() -> None:
    status = parsed(TOPIC, dumps(STATUS))
    assert status is not None
    assert status.lines[0].batch == "WO-1"
    assert status.devices[0].values[0].value == 72.5
    # What an edge of before this change publishes is still understood.
    old = {
        k: v for k, v in STATUS.items() if k not in {"session", "interval_s", "lines", "devices"}
    }
    assert parsed(TOPIC, dumps(old)) is not None
    assert parsed(TOPIC, dumps({"edge_id": "edge-1", "state": "offline", "time": T})) is not None


@pytest.mark.parametrize(
    ("topic", "payload", "kind"),
    [
        (TOPIC, b"", "empty"),
        (TOPIC, b"{", "invalid"),
        (TOPIC, b"\xff\xfe{}", "invalid"),
        (TOPIC, dumps({**STATUS, "extra": 1}), "invalid"),
        (TOPIC, dumps({**STATUS, "state": "maybe"}), "invalid"),
        (TOPIC, dumps({**STATUS, "outbox_depth": 2**63}), "invalid"),
        (TOPIC, dumps({**STATUS, "outbox_oldest_age_s": float("nan")}), "invalid"),
        (TOPIC, dumps({**STATUS, "alarms": ["a\x00"]}), "invalid"),
        (TOPIC, dumps({**STATUS, "time": "2026-11-25T10:00:00"}), "invalid"),
        (TOPIC, dumps({**STATUS, "interval_s": 0}), "invalid"),
        (TOPIC, dumps({**STATUS, "lines": [{"line": "a/b"}]}), "invalid"),
        (TOPIC, dumps({**STATUS, "devices": [{"device": "d"}] * 1001}), "invalid"),
        (topics.status("edge-2"), dumps(STATUS), "edge_id"),
        ("trace/v1/edges/edge-1/data/readings", dumps(STATUS), "topic"),
        (topics.status("a b"), dumps({**STATUS, "edge_id": "a b"}), "topic"),
        (topics.status("e\x00"), dumps(STATUS), "topic"),
        (topics.status("x" * 129), dumps(STATUS), "topic"),
        (TOPIC, b" " * (MAX + 1), "oversized"),
    ],
)
def test_each_refusal_says_its_kind(topic: str, payload: bytes, kind: str) -> None:
    with pytest.raises(StatusRefused) as refused:
        parse_status(topic, payload, MAX)
    assert refused.value.kind == kind


def test_a_refusal_quotes_no_input() -> None:
    """The reason is logged and stored: it names the field, never echoes the bytes."""
    secret = "x" * 5000
    with pytest.raises(StatusRefused) as refused:
        parse_status(TOPIC, dumps({**STATUS, "version": secret}), MAX)
    assert secret not in str(refused.value)
    assert "version" in str(refused.value)


HOSTILE_TOPICS = st.one_of(
    st.just(TOPIC),
    st.text(max_size=80),
    st.builds(topics.status, st.text(max_size=20)),
)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes(payload: bytes) -> None:
    parsed(TOPIC, payload)


@given(HOSTILE_JSON)
def test_hostile_json(value: Any) -> None:
    parsed(TOPIC, dumps(value))


@given(HOSTILE_TOPICS, one_value_replaced(STATUS))
def test_a_status_with_one_value_replaced(topic: str, document: Any) -> None:
    parsed(topic, dumps(document))


@given(HOSTILE_TOPICS, damaged(dumps(STATUS)))
def test_a_status_damaged_in_transit(topic: str, payload: bytes) -> None:
    parsed(topic, payload)


@given(st.integers(min_value=1024, max_value=4096), st.binary(min_size=0, max_size=8192))
def test_the_size_bound_holds_before_anything_is_read(max_bytes: int, tail: bytes) -> None:
    payload = dumps(STATUS) + tail
    if len(payload) > max_bytes:
        with pytest.raises(StatusRefused) as refused:
            parse_status(TOPIC, payload, max_bytes)
        assert refused.value.kind == "oversized"
    else:
        parsed(TOPIC, payload, max_bytes)


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deep_nesting_anywhere(depth: int) -> None:
    for document in (deep(depth), {**STATUS, "devices": [deep(depth)]}):
        assert parsed(TOPIC, dumps(document), 10 * 1024 * 1024) is None


@pytest.mark.parametrize(
    "value", [Raw("9" * 5000), Raw("1e400"), float("inf"), -1, "\ud800", "a\x00"]
)
def test_a_device_value_past_every_bound_is_refused(value: Any) -> None:
    device = {**STATUS["devices"][0], "values": [{"tag": "t", "value": value, "time": T}]}
    if isinstance(value, str):
        device = {**device, "last_error": value}
    if value == -1:
        device = {**device, "failures": value}
    assert parsed(TOPIC, dumps({**STATUS, "devices": [device]})) is None
