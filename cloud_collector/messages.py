"""An edge's MQTT message read as far as it goes: a valid envelope in one pass; an invalid
one again record by record, so that its range is known and its bad records can be refused
by number in the ack; or, when not even the range can be read, Rejected with the reason
(a dead letter, nothing to acknowledge).

`read_readings` is the group commit's way in (see group_commit.py): a message of readings
that the contract accepts whole, read by a model that checks the same rules as the
contract's `Reading` in pydantic's compiled core instead of Python validators (about twice
as fast). It may only ever be stricter than the contract: whatever it does not accept
(events, a record the contract would refuse, a time past the collector's clock) returns
None and is read by `read`, which gives the contract's own reasons.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Literal, NotRequired

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

from cloud_collector import dead_letters
from protocols.mqtt import topics
from protocols.mqtt.contract import (
    CONTRACT,
    EARLIEST,
    LATEST,
    MAX_RECORDS,
    MAX_SEQ,
    Envelope,
    EnvelopeRange,
    Identifier,
    Quality,
    Record,
    TransformationEventRecord,
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
# The contract's text rules without its Python validators: `storable` (no NUL; no lone
# surrogate, which JSON text cannot carry into pydantic's parser anyway) as a pattern, the
# aware time within EARLIEST..LATEST as constraints. tests/cloud_collector/
# test_messages_fast.py holds this to the contract field by field and on hostile input.
_NO_NUL = r"^[^\x00]*$"
_Name = Annotated[str, Field(min_length=1, max_length=128, pattern=_NO_NUL)]
_Unit = Annotated[str, Field(max_length=32, pattern=_NO_NUL)]
_Detail = Annotated[str, Field(max_length=500, pattern=_NO_NUL)]
_Time = Annotated[AwareDatetime, Field(ge=EARLIEST, lt=LATEST)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]


@with_config(ConfigDict(extra="forbid"))
class FastReading(TypedDict):
    """protocols.mqtt.contract.Reading, checked in compiled code and kept as the dict it
    was read into (a third of the cost of a model instance); `kind` is required, as the
    contract's discriminated union requires it. Absent keys take FAST_DEFAULTS, which are
    the contract's defaults; `read_readings` checks its "good needs a value" rule."""

    kind: Literal["reading"]
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]
    time: _Time
    device_time: NotRequired[_Time | None]
    line: Identifier
    batch: _Name | None
    device: Identifier
    tag: Identifier
    value: _Finite | None
    unit: NotRequired[_Unit | None]
    quality: NotRequired[Quality]
    detail: NotRequired[_Detail | None]


FAST_DEFAULTS: dict[str, object] = {
    "device_time": None,
    "unit": None,
    "quality": "good",
    "detail": None,
}


class _FastEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    stream: Identifier
    epoch: Identifier
    records: list[FastReading] = Field(min_length=1, max_length=MAX_RECORDS)


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
        return self.records[0]["seq"]

    @property
    def last_seq(self) -> int:
        return self.records[-1]["seq"]


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
        env = _FastEnvelope.model_validate_json(payload)
    except (ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        return None
    if env.edge_id != topic_edge or env.stream != topic_stream:
        return None
    records = env.records
    first = records[0]["seq"]
    latest = received + max_skew
    # Compared in the reading's own offset: datetimes that share a tzinfo object compare
    # without calling its utcoffset(), which costs more than the rest of the check.
    zone = None
    for offset, record in enumerate(records):
        time = record["time"]
        if time.tzinfo is not zone:
            zone = time.tzinfo
            latest = latest.astimezone(zone)
        if record["seq"] != first + offset or time > latest:
            return None
        if record["value"] is None and record.get("quality", "good") == "good":
            return None  # the contract refuses it: "good" must have a value
    return Readings(topic, payload, env.edge_id, env.stream, env.epoch, records, received)
