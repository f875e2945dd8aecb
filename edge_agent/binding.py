"""Binds what the line captures to its active batch and appends it to the outbox."""

from __future__ import annotations

from datetime import UTC, datetime

from edge_agent.batch_context import ActiveBatch, BatchContext
from edge_agent.outbox import Outbox
from protocols.driver import Sample

READINGS = "readings"
# Trace events travel apart from readings: when an outbox must thin readings, events are
# never among what is dropped.
EVENTS = "events"


class Binder:
    def __init__(self, context: BatchContext, outbox: Outbox) -> None:
        self.context = context
        self.outbox = outbox

    def reading(self, line_id: str, device: str, sample: Sample, taken_at: datetime) -> int:
        active = self.context.active(line_id)
        return self.outbox.append(
            READINGS,
            {
                "kind": "reading",
                "time": taken_at,
                "device_time": sample.device_time,
                "line": line_id,
                "batch": active.batch_id if active else None,
                "device": device,
                "tag": sample.tag,
                "value": sample.value,
                "unit": sample.unit,
                "quality": sample.quality,
                "detail": sample.detail,
            },
        )

    def start_batch(self, line_id: str, batch_id: str, by: str) -> ActiveBatch:
        batch = self.context.start(line_id, batch_id, by, datetime.now(UTC))
        self._event("batch_started", batch, batch.started_at, by)
        return batch

    def end_batch(self, line_id: str, by: str) -> ActiveBatch:
        at = datetime.now(UTC)
        batch = self.context.end(line_id, by)
        self._event("batch_ended", batch, at, by)
        return batch

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
