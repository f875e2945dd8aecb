"""Messages an edge publishes and the acks a collector answers with (contract version 1).

Every record an edge captures gets a sequence number, dense and increasing within its
(edge, stream, epoch). A message carries a contiguous run of records, so a collector can
commit them idempotently and acknowledge exactly what it committed, however the edge
regroups them when it resends. The epoch changes only when an edge loses its outbox
(a new install), which starts the numbering again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

CONTRACT: Literal["trace.v1"] = "trace.v1"

Quality = Literal["good", "uncertain", "bad"]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset (e.g. 2026-11-25T10:00:00Z)")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reading(Strict):
    """One process value read from a device, bound to the line's batch (None = line idle)."""

    kind: Literal["reading"] = "reading"
    seq: int = Field(ge=0)
    time: AwareDatetime  # when the edge took it
    device_time: AwareDatetime | None = None  # the device's own timestamp, when it has one
    line: Identifier
    batch: str | None = Field(max_length=128)
    device: Identifier
    tag: Identifier
    value: float | None  # None only when the device gave no usable value (bad quality)
    unit: str | None = Field(default=None, max_length=32)
    quality: Quality = "good"
    detail: str | None = Field(default=None, max_length=500)  # why quality is not good

    @model_validator(mode="after")
    def _value_or_bad(self) -> Reading:
        if self.value is None and self.quality == "good":
            raise ValueError("a reading with quality 'good' must have a value")
        return self


class BatchEvent(Strict):
    """A batch started or ended on a line: who or what did it, and when."""

    kind: Literal["batch_started", "batch_ended"]
    seq: int = Field(ge=0)
    time: AwareDatetime
    line: Identifier
    batch: str = Field(min_length=1, max_length=128)
    by: str = Field(min_length=1, max_length=128)  # operator, PLC tag, MES, API client


class DeviceEvent(Strict):
    """A device went offline (the gap starts) or came back (the gap ends)."""

    kind: Literal["device_offline", "device_online"]
    seq: int = Field(ge=0)
    time: AwareDatetime
    line: Identifier
    device: Identifier
    detail: str | None = Field(default=None, max_length=500)


class ReadingsDropped(Strict):
    """The edge's outbox was full and deleted readings by its policy: a known, counted gap."""

    kind: Literal["readings_dropped"] = "readings_dropped"
    seq: int = Field(ge=0)
    time: AwareDatetime
    stream: Identifier
    count: int = Field(ge=1)
    first_seq: int = Field(ge=0)
    last_seq: int = Field(ge=0)
    policy: Literal["thin_oldest", "drop_oldest", "drop_newest"]


Record = Annotated[
    Reading | BatchEvent | DeviceEvent | ReadingsDropped, Field(discriminator="kind")
]


class Envelope(Strict):
    """One MQTT message from an edge: a contiguous run of records of one stream."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    stream: Identifier
    epoch: Identifier
    records: list[Record] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _contiguous(self) -> Envelope:
        first = self.records[0].seq
        for offset, record in enumerate(self.records):
            if record.seq != first + offset:
                raise ValueError(
                    f"records[{offset}].seq is {record.seq}, expected {first + offset}: "
                    "a message must carry a contiguous run of sequence numbers"
                )
        return self

    @property
    def first_seq(self) -> int:
        return self.records[0].seq

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq


class Ack(Strict):
    """The collector's word that records first_seq..last_seq are committed in the database."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    stream: Identifier
    epoch: Identifier
    first_seq: int = Field(ge=0)
    last_seq: int = Field(ge=0)
    duplicate: bool = False  # all of it had been committed before (a resend)


class EdgeStatus(Strict):
    """Retained on trace/v1/edges/{edge_id}/status; the broker publishes the offline form as
    the edge's last will when its connection dies."""

    contract: Literal["trace.v1"] = CONTRACT
    edge_id: Identifier
    state: Literal["online", "offline"]
    time: AwareDatetime
    version: str | None = None
    outbox_depth: int | None = None
    outbox_oldest_age_s: float | None = None
    outbox_dropped: int | None = None
    alarms: list[str] = Field(default_factory=list)
    last_ack_at: AwareDatetime | None = None
