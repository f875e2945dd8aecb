"""An edge's MQTT message read as far as it goes: a valid envelope in one pass; an invalid
one again record by record, so that its range is known and its bad records can be refused
by number in the ack; or, when not even the range can be read, Rejected with the reason
(a dead letter, nothing to acknowledge)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import TypeAdapter, ValidationError

from cloud_collector import dead_letters
from protocols.mqtt import topics
from protocols.mqtt.contract import Envelope, EnvelopeRange, Record, TransformationEventRecord

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
