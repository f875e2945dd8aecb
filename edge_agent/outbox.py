"""The outbox: every record waits here until the collector acknowledges it is committed.

The publisher and the ack path use only this interface (see docs/outbox.md):
append a record and get its sequence number; take the next records to send; accept what
was acknowledged; requeue what was sent but not acknowledged (timeout or reconnect).

`MemoryOutbox` keeps records in memory: the walking skeleton's implementation. It honours
the interface's ordering and ack rules but not durability; the SQLite outbox replaces it.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any, Protocol

from pydantic import TypeAdapter

from protocols.mqtt.contract import Record

_RECORD: TypeAdapter[Record] = TypeAdapter(Record)


class Outbox(Protocol):
    epoch: str

    def append(self, stream: str, fields: dict[str, Any]) -> int: ...

    def take(self, stream: str, limit: int) -> list[Record]: ...

    def accept(self, stream: str, epoch: str, first_seq: int, last_seq: int) -> int: ...

    def requeue(self, stream: str) -> None: ...

    def depth(self, stream: str) -> int: ...

    def streams(self) -> list[str]: ...


class MemoryOutbox:
    def __init__(self, epoch: str | None = None) -> None:
        self.epoch = epoch or uuid.uuid4().hex
        self._records: dict[str, OrderedDict[int, Record]] = {}
        self._next_seq: dict[str, int] = {}
        self._next_to_send: dict[str, int] = {}

    def append(self, stream: str, fields: dict[str, Any]) -> int:
        seq = self._next_seq.get(stream, 0)
        record = _RECORD.validate_python({**fields, "seq": seq})
        self._records.setdefault(stream, OrderedDict())[seq] = record
        self._next_seq[stream] = seq + 1
        self._next_to_send.setdefault(stream, seq)
        return seq

    def take(self, stream: str, limit: int) -> list[Record]:
        records = self._records.get(stream)
        if not records:
            return []
        start = self._next_to_send[stream]
        out: list[Record] = []
        seq = start
        while len(out) < limit and seq in records:
            out.append(records[seq])
            seq += 1
        self._next_to_send[stream] = seq
        return out

    def accept(self, stream: str, epoch: str, first_seq: int, last_seq: int) -> int:
        if epoch != self.epoch:
            return 0  # an ack for an outbox this edge no longer has
        records = self._records.get(stream, OrderedDict())
        removed = 0
        for seq in range(first_seq, last_seq + 1):
            if records.pop(seq, None) is not None:
                removed += 1
        return removed

    def requeue(self, stream: str) -> None:
        records = self._records.get(stream)
        if records:
            self._next_to_send[stream] = next(iter(records))

    def depth(self, stream: str) -> int:
        return len(self._records.get(stream, ()))

    def streams(self) -> list[str]:
        return list(self._records)
