"""Binds what the line captures to its active batch and appends it to the outbox.

The batch of a reading is decided here, when it is taken, from the line's active batch:
never guessed later. A device's batch-source tag (a PLC batch number or id) is not a
reading: its changes start and end batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge_agent.batch_context import ActiveBatch, BatchContext
from edge_agent.outbox import EVENTS, READINGS, Outbox
from protocols.driver import Sample


@dataclass(frozen=True)
class BatchTag:
    tag: str
    prefix: str = ""

    def batch_id(self, sample: Sample) -> str | None:
        """The batch the tag names, or None for idle (empty, 0) or an unusable value."""
        if sample.quality == "bad":
            return None
        if sample.text is not None:
            text = sample.text.strip()
            return text or None
        if sample.value is None or sample.value == 0:
            return None
        number = int(sample.value) if float(sample.value).is_integer() else sample.value
        return f"{self.prefix}{number}"


class Binder:
    def __init__(
        self, context: BatchContext, outbox: Outbox, batch_tags: dict[str, BatchTag] | None = None
    ) -> None:
        self.context = context
        self.outbox = outbox
        self.batch_tags = batch_tags or {}  # device name -> its batch-source tag
        # Called (line, batch, started_at, ended_at) inside the transaction that ends a
        # batch: the stations add the batch's TransformationEvent there.
        self.on_batch_end: Callable[[str, str, datetime, datetime], None] | None = None

    def readings(self, line_id: str, device: str, samples: list[Sample], taken_at: datetime) -> int:
        """Bind one poll (or one notification) and commit it to the outbox as a whole."""
        batch_tag = self.batch_tags.get(device)
        if batch_tag is not None:
            for sample in samples:
                if sample.tag == batch_tag.tag:
                    self._follow_batch_tag(line_id, device, batch_tag, sample, taken_at)
            samples = [s for s in samples if s.tag != batch_tag.tag]
        active = self.context.active(line_id)
        batch = active.batch_id if active else None
        at = taken_at.isoformat()
        records: list[tuple[str, dict[str, Any]]] = [
            (
                READINGS,
                {
                    "kind": "reading",
                    "time": at,
                    "device_time": s.device_time.isoformat() if s.device_time else None,
                    "line": line_id,
                    "batch": batch,
                    "device": device,
                    "tag": s.tag,
                    "value": s.value,
                    "unit": s.unit,
                    "quality": s.quality,
                    "detail": s.detail,
                },
            )
            for s in samples
        ]
        self.outbox.append_many(records)
        return len(records)

    def _follow_batch_tag(
        self, line_id: str, device: str, tag: BatchTag, sample: Sample, at: datetime
    ) -> None:
        wanted = tag.batch_id(sample)
        active = self.context.active(line_id)
        if (active.batch_id if active else None) == wanted or sample.quality == "bad":
            return  # no change, or the PLC value is unusable: keep the line as it is
        by = f"plc:{device}/{tag.tag}"
        if active is not None:
            self.end_batch(line_id, by, at)
        if wanted is not None:
            self.start_batch(line_id, wanted, by, at)

    def start_batch(
        self, line_id: str, batch_id: str, by: str, at: datetime | None = None
    ) -> ActiveBatch:
        at = at or datetime.now(UTC)
        with self._atomically():
            batch = self.context.start(line_id, batch_id, by, at)
            self._event("batch_started", batch, at, by)
        return batch

    def end_batch(self, line_id: str, by: str, at: datetime | None = None) -> ActiveBatch:
        at = at or datetime.now(UTC)
        with self._atomically():
            batch = self.context.end(line_id, by)
            self._event("batch_ended", batch, at, by)
            if self.on_batch_end is not None:
                self.on_batch_end(line_id, batch.batch_id, batch.started_at, at)
        return batch

    def device_event(self, line_id: str, device: str, online: bool, detail: str | None) -> None:
        self.outbox.append(
            EVENTS,
            {
                "kind": "device_online" if online else "device_offline",
                "time": datetime.now(UTC),
                "line": line_id,
                "device": device,
                "detail": detail,
            },
        )

    @contextmanager
    def _atomically(self) -> Iterator[None]:
        """The batch context and the outbox change in one transaction; on failure the
        context's memory is reloaded from disk so both stay as they were."""
        try:
            with self.outbox.transaction():
                yield
        except BaseException:
            self.context.reload()
            raise

    def _event(self, kind: str, batch: ActiveBatch, at: datetime, by: str) -> None:
        self.outbox.append(
            EVENTS,
            {
                "kind": kind,
                "time": at,
                "line": batch.line_id,
                "batch": batch.batch_id,
                "by": by,
            },
        )
