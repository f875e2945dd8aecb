"""messages.read_readings, the group commit's reader, may only ever be stricter than the
contract: whatever it accepts, the contract accepts with the same values and the clock
check refuses nothing of it; whatever it does not, ingest reads with the contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_collector.messages import (
    MAX_MESSAGE_BYTES,
    FastReading,
    read,
    read_readings,
)
from protocols.mqtt import topics
from protocols.mqtt.contract import Envelope, Reading
from tests.hostile_input import damaged, dumps, one_value_replaced
from tests.hypothesis_profiles import load_from_env

load_from_env()

TOPIC = topics.data("line-pc-1", "readings")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def _document() -> dict[str, Any]:
    records = [
        {
            "kind": "reading",
            "seq": 7,
            "time": "2026-11-25T10:00:00Z",
            "line": "line-1",
            "batch": "B-1",
            "device": "plc-1",
            "tag": "temperature",
            "value": 81.5,
            "unit": "Cel",
        },
        {
            "kind": "reading",
            "seq": 8,
            "time": "2026-11-25T10:00:01.250+01:00",
            "device_time": "2026-11-25T09:00:01Z",
            "line": "line-1",
            "batch": None,
            "device": "plc-1",
            "tag": "pressure",
            "value": None,
            "quality": "bad",
            "detail": "sensor open",
        },
    ]
    return {"edge_id": "line-pc-1", "stream": "readings", "epoch": "e1", "records": records}


def _agrees_with_the_contract(payload: bytes) -> None:
    fast = read_readings(TOPIC, payload, NOW, SKEW, MAX_MESSAGE_BYTES)
    if fast is None:
        return
    envelope = Envelope.model_validate_json(payload)  # raises if the fast reader was laxer
    assert [msgspec.structs.asdict(r) for r in fast.records] == [
        r.model_dump() for r in envelope.records
    ]
    assert all(isinstance(r, Reading) for r in envelope.records)
    for got, want in zip(fast.records, envelope.records, strict=True):  # and the offsets
        assert got.time.utcoffset() == want.time.utcoffset()
        if got.device_time is not None:
            assert want.device_time is not None
            assert got.device_time.utcoffset() == want.device_time.utcoffset()
    message = read(TOPIC, payload)
    assert not message.refused
    assert all(r is not None and r.time <= NOW + SKEW for r in message.records)


def test_the_fast_reading_has_the_contracts_fields() -> None:
    contract = Reading.model_fields
    fields = msgspec.structs.fields(FastReading)
    assert [f.name for f in fields] == list(contract)
    # `kind` has a default in the contract, but its union needs it in the message.
    required = {n for n, info in contract.items() if info.is_required()} | {"kind"}
    assert {f.name for f in fields if f.required} == required
    assert {f.name: f.default for f in fields if not f.required} == {
        n: contract[n].default for n in set(contract) - required
    }


def test_a_valid_message_is_read_fast() -> None:
    fast = read_readings(TOPIC, dumps(_document()), NOW, SKEW, MAX_MESSAGE_BYTES)
    assert fast is not None and (fast.first_seq, fast.last_seq) == (7, 8)


# What the contract refuses or ingest checks record by record: never the fast way.
SLOW: dict[str, tuple[tuple[Any, ...], Any]] = {
    "NUL in a name": (("records", 0, "batch"), "B\x001"),
    "NUL in a unit": (("records", 0, "unit"), "\x00"),
    "no kind": (("records", 0, "kind"), None),
    "an event": (("records", 0, "kind"), "batch_started"),
    "time past the clock": (("records", 0, "time"), "2026-11-25T12:06:00Z"),
    "time in 2100": (("records", 0, "time"), "2100-01-01T00:30:00+01:00"),
    "time before 2000 in UTC": (("records", 0, "time"), "2000-01-01T00:30:00+01:00"),
    "time without offset": (("records", 0, "time"), "2026-11-25T10:00:00"),
    "good without a value": (("records", 0, "value"), None),
    "a gap in the numbers": (("records", 1, "seq"), 9),
    "another edge": (("edge_id",), "line-pc-2"),
    "another stream": (("stream",), "events"),
    "an unknown key": (("records", 0, "colour"), "red"),
    "an overlong detail": (("records", 1, "detail"), "x" * 501),
    "NUL in a detail": (("records", 1, "detail"), "open\x00"),
    "a space in a tag": (("records", 0, "tag"), "tem perature"),
    "a newline after a line": (("records", 0, "line"), "line-1\n"),
    "a slash in a device": (("records", 1, "device"), "plc/1"),
    "a non-ASCII tag": (("records", 1, "tag"), "pressión"),
    "an empty tag": (("records", 1, "tag"), ""),
    "an epoch with a space": (("epoch",), "e 1"),
    "an edge with a space": (("edge_id",), "line pc"),
    # The fast reader takes times only in the RFC 3339 form the contract writes.
    "seven fractional digits": (("records", 0, "time"), "2026-11-25T10:00:00.1234567Z"),
    "a time with a space": (("records", 0, "time"), "2026-11-25 10:00:00Z"),
    "a lower-case t": (("records", 0, "time"), "2026-11-25t10:00:00Z"),
    "an offset without colon": (("records", 0, "time"), "2026-11-25T10:00:00+0100"),
    "a time as Unix seconds": (("records", 0, "time"), 1_795_600_000),
    "a device time in 1999": (("records", 1, "device_time"), "1999-12-31T23:59:59Z"),
    "a day that does not exist": (("records", 0, "time"), "2026-02-30T10:00:00Z"),
    "a leap second": (("records", 0, "time"), "2026-06-30T23:59:60Z"),
    "Arabic-Indic digits": (("records", 0, "time"), "٢٠٢٦-11-25T10:00:00Z"),
    "a sequence number as a float": (("records", 0, "seq"), 7.0),
    "a sequence number as text": (("records", 0, "seq"), "7"),
    "a value as text": (("records", 0, "value"), "81.5"),
    "a value as a boolean": (("records", 0, "value"), True),
    "an empty batch": (("records", 0, "batch"), ""),
    "an overlong unit": (("records", 0, "unit"), "u" * 33),
}


@pytest.mark.parametrize("case", SLOW, ids=list(SLOW))
def test_what_needs_the_contracts_reasons_is_not_read_fast(case: str) -> None:
    path, value = SLOW[case]
    document = _document()
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    if value is None and path[-1] == "kind":
        del target["kind"]
    else:
        target[path[-1]] = value
    assert read_readings(TOPIC, dumps(document), NOW, SKEW, MAX_MESSAGE_BYTES) is None


def test_a_lone_surrogate_is_not_read_fast() -> None:
    payload = dumps(_document()).replace(b'"B-1"', b'"B\\ud800"')
    assert read_readings(TOPIC, payload, NOW, SKEW, MAX_MESSAGE_BYTES) is None


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1" + b"0" * 400])
def test_a_value_past_a_float_is_not_read_fast(number: bytes) -> None:
    payload = dumps(_document()).replace(b"81.5", number)
    assert read_readings(TOPIC, payload, NOW, SKEW, MAX_MESSAGE_BYTES) is None


# Times as a careless or hostile sender writes them: digits, separators, fractions and
# offsets of every length, around the contract's form.
_TIMES = st.builds(
    lambda date, sep, clock, fraction, zone: f"{date}{sep}{clock}{fraction}{zone}",
    st.from_regex(r"\A(19|20|21)[0-9]{2}-[0-9]{1,2}-[0-9]{1,2}\Z"),
    st.sampled_from(["T", "t", " ", "_"]),
    st.from_regex(r"\A[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?\Z"),
    st.one_of(st.just(""), st.from_regex(r"\A[.,][0-9]{0,9}\Z")),
    st.one_of(
        st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+14:00", "-12:00", "+24:00"]),
        st.from_regex(r"\A[+-][0-9]{1,2}:?[0-9]{0,2}\Z"),
    ),
)


@given(_TIMES, st.sampled_from(["time", "device_time"]))
def test_any_time_is_read_fast_only_as_the_contract_reads_it(time: str, field: str) -> None:
    """Whatever a time's text, the fast reader takes it only where the contract does, as
    the same instant in the same offset (fractions past microseconds are not taken: the
    contract truncates them)."""
    document = _document()
    document["records"][0][field] = time
    if field == "time":
        document["records"][0]["time"] = time
    _agrees_with_the_contract(dumps(document))


def test_a_time_read_fast_is_the_contracts() -> None:
    """Read through the cache of times a second time, the same values."""
    for _ in range(2):
        fast = read_readings(TOPIC, dumps(_document()), NOW, SKEW, MAX_MESSAGE_BYTES)
        assert fast is not None
        assert fast.records[1].time == datetime(2026, 11, 25, 9, 0, 1, 250_000, tzinfo=UTC)
        assert fast.records[1].time.utcoffset() == timedelta(hours=1)
        assert fast.records[1].device_time == datetime(2026, 11, 25, 9, 0, 1, tzinfo=UTC)


def test_an_oversized_message_is_not_read_fast() -> None:
    payload = dumps(_document())
    assert read_readings(TOPIC, payload, NOW, SKEW, len(payload) - 1) is None


@given(st.data())
def test_one_hostile_value_is_never_accepted_where_the_contract_refuses(data: Any) -> None:
    _agrees_with_the_contract(dumps(data.draw(one_value_replaced(_document()))))


@given(st.text(max_size=12), st.sampled_from(["line", "device", "tag", "batch", "unit"]))
def test_any_name_is_read_fast_only_where_the_contract_takes_it(name: str, field: str) -> None:
    """Whatever a name is, in whichever field, the fast reader takes no more than the
    contract."""
    document = _document()
    for record in document["records"]:
        record[field] = name
    _agrees_with_the_contract(dumps(document))


@given(st.data())
def test_damaged_bytes_are_never_accepted_where_the_contract_refuses(data: Any) -> None:
    _agrees_with_the_contract(data.draw(damaged(json.dumps(_document()).encode())))


@pytest.mark.parametrize(
    ("times", "accepted"),
    [
        (["2026-11-25T12:05:00Z", "2026-11-25T13:05:00+01:00"], True),  # at the bound
        (["2026-11-25T12:05:00Z", "2026-11-25T13:05:00.000001+01:00"], False),
        (["2026-11-25T17:35:00.000001+05:30", "2026-11-25T12:00:00Z"], False),
        (["2026-11-25T06:05:00-06:00", "2026-11-25T12:05:00.000001Z"], False),
    ],
)
def test_the_clock_bound_holds_whatever_the_offsets(times: list[str], accepted: bool) -> None:
    """NOW + SKEW is 12:05 UTC; each record's time in its own offset, two offsets per
    message (the reader compares in each reading's offset)."""
    document = _document()
    for record, time in zip(document["records"], times, strict=True):
        record["time"] = time
        record.pop("device_time", None)
    fast = read_readings(TOPIC, dumps(document), NOW, SKEW, MAX_MESSAGE_BYTES)
    assert (fast is not None) == accepted
