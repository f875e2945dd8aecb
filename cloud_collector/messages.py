"""An edge's MQTT message read as far as it goes: a valid envelope in one pass; an invalid
one again record by record, so that its range is known and its bad records can be refused
by number in the ack; or, when not even the range can be read, Rejected with the reason
(a dead letter, nothing to acknowledge).

`read_readings` is the group commit's way in (see group_commit.py): a message of readings
that the contract accepts whole, decoded by msgspec into structs of the contract's
`Reading` shape (see below why, and what it checks beside). It may only ever be stricter
than the contract: whatever it does not accept (events, a record the contract would
refuse, a time past the collector's clock) returns None and is read by `read`, which gives
the contract's own reasons.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from pydantic import TypeAdapter, ValidationError

from cloud_collector import dead_letters
from protocols.mqtt import topics
from protocols.mqtt.contract import (
    CONTRACT,
    EARLIEST,
    LATEST,
    MAX_RECORDS,
    MAX_SEQ,
    Detail,
    Envelope,
    EnvelopeRange,
    Identifier,
    Name,
    Quality,
    Record,
    TransformationEventRecord,
    Unit,
)

# A larger message is not read at all (TRACE_MAX_MESSAGE_BYTES).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_RECORD: TypeAdapter[Record] = TypeAdapter(Record)


class Rejected(Exception):
    """A message that cannot be read into a range of records: it goes to the dead-letter
    store, and there is nothing to acknowledge."""

    def __init__(self, reason: str, edge_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.edge_id = edge_id


@dataclass
class Message:
    """A message read as far as it could be: its range, and each record or, where the
    contract refused it, None and the reason."""

    edge_id: str
    stream: str
    epoch: str
    first_seq: int
    last_seq: int
    records: list[Record | None]  # records[i] has seq first_seq + i
    refused: dict[int, str] = field(default_factory=dict)  # seq -> why

    @property
    def where(self) -> dead_letters.Range:
        return dead_letters.Range(
            self.edge_id, self.stream, self.epoch, self.first_seq, self.last_seq
        )


def _problems(err: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}"
        for e in err.errors()[:10]
    )


def _check_sender(edge_id: str, stream: str, topic_edge: str, topic_stream: str) -> None:
    if edge_id != topic_edge:
        raise Rejected(
            f"payload edge_id {edge_id!r} does not match topic edge {topic_edge!r}: "
            "an edge may publish only under its own topic",
            topic_edge,
        )
    if stream != topic_stream:
        raise Rejected(
            f"payload stream {stream!r} does not match topic stream {topic_stream!r}", topic_edge
        )


def read(topic: str, payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """The message in `payload`, checked against its topic. A valid envelope is read in one
    pass; an invalid one is read again record by record, so that its bad records can be
    refused by number. Rejected says why there is no range to answer."""
    try:
        topic_edge, topic_stream = topics.parse_data(topic)
    except ValueError as err:
        raise Rejected(str(err)) from err
    if len(payload) > max_bytes:
        raise Rejected(
            f"message of {len(payload):,} bytes is larger than the collector's limit of "
            f"{max_bytes:,} (TRACE_MAX_MESSAGE_BYTES): send fewer records per message",
            topic_edge,
        )
    try:
        env = Envelope.model_validate_json(payload)
    except ValidationError as err:
        return _read_record_by_record(topic_edge, topic_stream, payload, err)
    _check_sender(env.edge_id, env.stream, topic_edge, topic_stream)
    records: list[Record | None] = list(env.records)
    return Message(env.edge_id, env.stream, env.epoch, env.first_seq, env.last_seq, records)


def _read_record_by_record(
    topic_edge: str, topic_stream: str, payload: bytes, err: ValidationError
) -> Message:
    whole = f"invalid {topic_stream} message: {_problems(err)}"
    try:
        # The standard parser also reads what the strict one refuses outright (a lone
        # surrogate escape, NaN): such a record is then refused by the contract, by number.
        head = EnvelopeRange.model_validate(json.loads(payload))
    except (ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        raise Rejected(whole, topic_edge) from err
    _check_sender(head.edge_id, head.stream, topic_edge, topic_stream)
    message = Message(head.edge_id, head.stream, head.epoch, head.first_seq, head.last_seq, [])
    for raw in head.records:
        try:
            message.records.append(_RECORD.validate_python(raw))
        except ValidationError as bad:
            message.records.append(None)
            message.refused[int(raw["seq"])] = f"invalid record: {_problems(bad)}"  # type: ignore[call-overload]
    if not message.refused:
        raise Rejected(whole, topic_edge) from err  # the envelope itself is at fault
    return message


def refuse_future(message: Message, latest: datetime, skew: timedelta) -> None:
    reason = (
        f"time is more than {skew.total_seconds():.0f} s past the collector's clock: check "
        "the clock of the line PC or device (TRACE_MAX_SKEW_S on the collector)"
    )
    for record in message.records:
        if record is None:
            continue
        started = record.started_at if isinstance(record, TransformationEventRecord) else None
        if record.time > latest or (started is not None and started > latest):
            message.refused[record.seq] = reason


# ---- Readings that need nothing but a commit ---------------------------------------------
# msgspec decodes and type-checks the envelope in one compiled pass (about three times as
# fast as pydantic's model of the same shape, and a third of the collector's CPU at plant
# speed was that model). What msgspec checks differently from the contract is checked by
# read_readings in Python, once per distinct value (a message repeats its names and, poll
# by poll, its times):
# - times are read as text and turned into datetimes by `_time_of`, which takes only the
#   RFC 3339 form the contract writes with at most six fractional digits (msgspec would
#   round a longer fraction where the contract truncates it) and the contract's
#   EARLIEST..LATEST;
# - names: msgspec's patterns cost more than the whole decode, so `_names_valid` checks
#   each distinct set of names once with the contract's own types.
# tests/cloud_collector/test_messages_fast.py holds all of it to the contract field by
# field and on hostile input.
_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\dT(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
    r"(?:Z|[+-](?:0\d|1[0-4]):[0-5]\d)",
    re.ASCII,  # \d: the ten digits, not every script's
)
_LARGEST = sys.float_info.max
# Distinct values kept as checked are forgotten past this many (hostile input cannot grow
# them for ever).
_KEPT = 10_000

if TYPE_CHECKING:
    # What everything after read_readings sees: it puts in place of each time's text the
    # datetime the text names, before it returns the records.
    _TimeText = datetime
else:
    _TimeText = str


class FastReading(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """protocols.mqtt.contract.Reading as the group commit reads it, field for field with
    the contract's defaults; `kind` is required, as the contract's discriminated union
    requires it. `read_readings` checks the times, the names and the "good needs a value"
    rule."""

    kind: Literal["reading"]
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
    time: _TimeText
    device_time: _TimeText | None = None
    line: str
    batch: str | None
    device: str
    tag: str
    # Bounded by the largest finite float: NaN and the infinities fail the bounds.
    value: Annotated[float, msgspec.Meta(ge=-_LARGEST, le=_LARGEST)] | None
    unit: str | None = None
    quality: Quality = "good"
    detail: str | None = None


class _FastEnvelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    edge_id: str
    stream: str
    epoch: str
    records: Annotated[list[FastReading], msgspec.Meta(min_length=1, max_length=MAX_RECORDS)]
    contract: Literal["trace.v1"] = CONTRACT


_DECODER = msgspec.json.Decoder(_FastEnvelope)
_times: dict[str, datetime] = {}
_zones: dict[timedelta | None, tzinfo | None] = {}


def _time_of(text: str) -> datetime | None:
    """The time `text` names, if the contract takes it (one object per distinct text)."""
    known = _times.get(text)
    if known is not None:
        return known
    if _RFC3339.fullmatch(text) is None:
        return None
    try:
        time = datetime.fromisoformat(text)
    except ValueError:  # a day or time that does not exist
        return None
    if not EARLIEST <= time < LATEST:
        return None
    # Times of one offset share one tzinfo object: datetimes that do compare and subtract
    # without calling its utcoffset() (reading_rows.py, rollups.py). UTC's is one already.
    if time.tzinfo is not UTC:
        zone = _zones.setdefault(time.utcoffset(), time.tzinfo)
        if zone is not time.tzinfo:
            time = time.replace(tzinfo=zone)
    if len(_times) >= _KEPT:
        _times.clear()
    _times[text] = time
    return time


_NameKey = tuple[str, str | None, str, str, str | None, str | None]
# The contract's own types for line, batch, device, tag, unit and detail: a name not seen
# before is checked by them (seen ones are kept in _valid_names).
_NAMES: TypeAdapter[_NameKey] = TypeAdapter(
    tuple[Identifier, Name | None, Identifier, Identifier, Unit | None, Detail | None]
)
_IDS: TypeAdapter[tuple[str, str, str]] = TypeAdapter(tuple[Identifier, Identifier, Identifier])
_valid_names: set[_NameKey] = set()


def _names_valid(key: _NameKey) -> bool:
    """Whether line, batch, device, tag, unit and detail are what the contract accepts."""
    try:
        _NAMES.validate_python(key, strict=True)
    except ValidationError:
        return False
    if len(_valid_names) >= _KEPT:
        _valid_names.clear()
    _valid_names.add(key)
    return True


@dataclass
class Readings:
    """A message of readings, valid as a whole and dated within the collector's clock."""

    topic: str
    payload: bytes
    edge_id: str
    stream: str
    epoch: str
    records: list[FastReading]
    received: datetime  # when it was read: received_at of its rows, and the backfill mark

    @property
    def first_seq(self) -> int:
        return self.records[0].seq

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq


def read_readings(
    topic: str, payload: bytes, received: datetime, max_skew: timedelta, max_bytes: int
) -> Readings | None:
    """The message as readings to commit as they are, or None when it needs `read` (and
    the one-by-one path of ingest): anything but readings, anything the contract refuses,
    a time further than `max_skew` past `received`, a payload over `max_bytes`."""
    if len(payload) > max_bytes:
        return None
    try:
        topic_edge, topic_stream = topics.parse_data(topic)
        env = _DECODER.decode(payload)
    except (ValueError, msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if env.edge_id != topic_edge or env.stream != topic_stream:
        return None
    try:
        _IDS.validate_python((env.edge_id, env.stream, env.epoch), strict=True)
    except ValidationError:
        return None
    records = env.records
    first = records[0].seq
    latest = received + max_skew
    # Compared in the reading's own offset: datetimes that share a tzinfo object compare
    # without calling its utcoffset(), which costs more than the rest of the check.
    zone = None
    text: str | None = None
    time = received
    valid_names = _valid_names
    for offset, record in enumerate(records):
        if record.time != text:  # the readings of a poll share their time
            text = record.time  # type: ignore[assignment]  # still the text here
            found = _time_of(text)  # type: ignore[arg-type]
            if found is None:
                return None
            time = found
            if time.tzinfo is not zone:
                zone = time.tzinfo
                latest = latest.astimezone(zone)
        record.time = time
        if record.device_time is not None:
            device_time = _time_of(record.device_time)  # type: ignore[arg-type]
            if device_time is None:
                return None
            record.device_time = device_time
        if record.seq != first + offset or time > latest:
            return None
        if record.value is None and record.quality == "good":
            return None  # the contract refuses it: "good" must have a value
        names = (record.line, record.batch, record.device, record.tag, record.unit, record.detail)
        if names not in valid_names and not _names_valid(names):
            return None
    return Readings(topic, payload, env.edge_id, env.stream, env.epoch, records, received)
