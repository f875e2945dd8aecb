"""Batch ids made by a line's numbering rule, for batches started without one.

The rule (device_profiles/numbering.py) says what an id looks like; this keeps each line's
sequence in the edge's store and is called inside the transaction that starts the batch, so
a number is used exactly when its batch started: a start that fails, or a crash before the
commit, gives its number back. Nothing here needs the collector: the ids are unique while
the edge is offline, and after a restart the sequence goes on from the file.

An id is never made twice: besides the rule's own check (a reset needs its period in the
pattern), an id already started on this edge, however it came (a label, a PLC, an earlier
rule, a clock set back), is skipped and the sequence moves on.
"""

from __future__ import annotations

from datetime import datetime

from device_profiles.numbering import BatchNumbering
from edge_agent.store import EdgeStore

MAX_SKIPS = 100_000  # ids taken in a row before giving up: a rule or a store gone wrong

_SEQUENCE = "select period, next_seq from batch_sequence where line_id = ?"
_TAKEN = "select 1 from batch_ids where batch_id = ?"
_ADVANCE = """
insert into batch_sequence (line_id, period, next_seq) values (?, ?, ?)
on conflict (line_id) do update set period = excluded.period, next_seq = excluded.next_seq
"""


class NoNumberingRule(ValueError):
    """A batch started without an id on a line that has no numbering rule."""


class BatchNumbers:
    """Each line's rule (replaced whole when a site version is applied) and its sequence."""

    def __init__(self, store: EdgeStore, rules: dict[str, BatchNumbering] | None = None) -> None:
        self.store = store
        self.rules = dict(rules or {})

    def next_id(self, line_id: str, at: datetime) -> str:
        """The next id of the line's rule at `at`, its sequence moved on in the store's
        transaction (join the one that starts the batch)."""
        rule = self.rules.get(line_id)
        if rule is None:
            raise NoNumberingRule(
                f"line {line_id} has no numbering rule: give the batch id, or add `numbering` "
                "to the line in the site configuration"
            )
        period = rule.period(at)
        with self.store.transaction() as db:
            row = db.execute(_SEQUENCE, (line_id,)).fetchone()
            seq = int(row[1]) if row is not None and row[0] == period else rule.sequence.start
            for _ in range(MAX_SKIPS):
                batch_id = rule.render(line_id, at, seq)
                seq += 1
                if db.execute(_TAKEN, (batch_id,)).fetchone() is None:
                    db.execute(_ADVANCE, (line_id, period, seq))
                    return batch_id
        raise NoNumberingRule(
            f"line {line_id}: {MAX_SKIPS} ids of its rule in a row were started already "
            f"(last {batch_id}): change the rule's pattern"
        )
