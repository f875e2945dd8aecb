"""Which batch each line is running now, kept on disk so it survives an agent restart.

A reading is bound to the batch active on its line at the moment it is taken, or to no
batch (the line is idle): never guessed later. Starting and ending a batch are trace
events of their own, with who or what did it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from edge_agent.store import EdgeStore


class BatchConflict(Exception):
    """The request does not fit the line's state (a batch already runs, or none does)."""


@dataclass(frozen=True)
class ActiveBatch:
    line_id: str
    batch_id: str
    started_at: datetime
    started_by: str


class BatchContext:
    """Kept in the edge's store with the outbox, so that a batch change and its event are
    one transaction: after a crash both happened or neither did. Changes are made inside
    the store's transaction (`start`, `end`); a rollback reloads the memory from the file."""

    def __init__(self, store: EdgeStore, lines: list[str]) -> None:
        self.store = store
        self._db = store.db
        self.lines = list(lines)
        self.reload()
        store.on_rollback.append(self.reload)

    def reload(self) -> None:
        self._active: dict[str, ActiveBatch] = {}
        for line_id, batch_id, started_at, started_by in self._db.execute(
            "select line_id, batch_id, started_at, started_by from active_batch"
        ):
            self._active[line_id] = ActiveBatch(
                line_id, batch_id, datetime.fromisoformat(started_at), started_by
            )

    def _check_line(self, line_id: str) -> None:
        if line_id not in self.lines:
            raise KeyError(
                f"line {line_id!r} is not on this edge (its lines: {', '.join(self.lines)})"
            )

    def active(self, line_id: str) -> ActiveBatch | None:
        return self._active.get(line_id)

    def check_idle(self, line_id: str) -> None:
        """KeyError for a line not on this edge, BatchConflict if it runs a batch."""
        self._check_line(line_id)
        current = self._active.get(line_id)
        if current is not None:
            raise BatchConflict(
                f"line {line_id} already runs batch {current.batch_id} (started "
                f"{current.started_at.isoformat()} by {current.started_by}): end it first"
            )

    def start(
        self, line_id: str, batch_id: str, by: str, at: datetime | None = None
    ) -> ActiveBatch:
        self.check_idle(line_id)
        batch = ActiveBatch(line_id, batch_id, at or datetime.now(UTC), by)
        with self.store.transaction() as db:
            db.execute(
                "insert into active_batch values (?, ?, ?, ?)",
                (line_id, batch_id, batch.started_at.isoformat(), by),
            )
            db.execute(
                "insert or ignore into batch_ids values (?, ?, ?)",
                (batch_id, line_id, batch.started_at.isoformat()),
            )
        self._active[line_id] = batch
        return batch

    def end(self, line_id: str, by: str) -> ActiveBatch:
        self._check_line(line_id)
        current = self._active.get(line_id)
        if current is None:
            raise BatchConflict(f"line {line_id} runs no batch: nothing to end")
        with self.store.transaction() as db:
            db.execute("delete from active_batch where line_id = ?", (line_id,))
        del self._active[line_id]
        return current
