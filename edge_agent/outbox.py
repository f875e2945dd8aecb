"""The outbox: every record waits here, on disk, until the collector acknowledges it.

See docs/outbox.md for the contract. The outbox's tables are in the edge's store
(edge_agent/store.py), whose transactions it shares with the batch context and the
stations. Records arrive as the message contract's models, readings as CheckedReading (the
text their model serialises to; edge_agent/records.py), and are stored as that JSON,
numbered, built once at append time, so publishing is string assembly and not
re-serialising.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from edge_agent.records import (
    RECORD_MODELS,
    UNNUMBERED,
    CheckedReading,
    EdgeRecord,
)
from edge_agent.store import EdgeStore
from protocols.mqtt.contract import ReadingsDropped

log = logging.getLogger(__name__)

Policy = Literal["thin_oldest", "drop_oldest", "drop_newest"]
# Bytes one reading takes in the outbox as stored JSON (measured by bench/edge_pipeline.py;
# the SQLite file adds roughly a third on top): the unit of the outbox's size bound.
READING_BYTES = 260
READINGS = "readings"
# Trace events travel apart from readings: when the outbox must thin readings, events are
# never among what is dropped.
EVENTS = "events"


def numbered(body: str, seq: int) -> str:
    """The JSON of a record built UNNUMBERED, with its sequence number `seq`: exactly what
    `record.model_copy(update={"seq": seq}).model_dump_json()` gives, at a fraction of the
    cost (every record model declares `kind` first and `seq` second)."""
    head, found, rest = body.partition(_UNNUMBERED)
    if not found or "," in head:
        raise ValueError(f"not a record built UNNUMBERED: {body[:80]}")
    return f'{head},"seq":{seq},{rest}'


_UNNUMBERED = f',"seq":{UNNUMBERED},'
_RECORD_TYPES = frozenset(RECORD_MODELS)
# What append takes: a contract model, or a reading checked against the Reading model.
Appendable = EdgeRecord | CheckedReading


@dataclass
class StreamStats:
    depth: int = 0
    oldest_age_s: float | None = None
    dropped: int = 0


@dataclass(frozen=True)
class Refusal:
    """The collector's last refusal: what it refused and why."""

    stream: str
    epoch: str
    first_seq: int
    last_seq: int
    reason: str
    at: datetime


@dataclass(frozen=True)
class QuarantinedRecord:
    stream: str
    epoch: str
    seq: int
    record: dict[str, Any]  # as it was sent
    reason: str
    quarantined_at: datetime


@dataclass
class OutboxStats:
    epoch: str
    bytes: int
    max_bytes: int
    streams: dict[str, StreamStats] = field(default_factory=dict)
    alarms: list[str] = field(default_factory=list)
    quarantined: int = 0
    last_refusal: Refusal | None = None

    @property
    def depth(self) -> int:
        return sum(s.depth for s in self.streams.values())

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.streams.values())


@dataclass
class _Lanes:
    """Where sending stands in one stream (memory only: after a restart all is resent)."""

    backlog: int  # next backlog seq to offer
    live_from: int  # records from here on are the live lane
    live: int  # next live seq to offer


_QUARANTINE = """
insert into quarantine (epoch, stream, seq, body, reason, quarantined_at)
select ?, stream, seq, body, ?, ? from records where stream = ? and seq between ? and ?
on conflict (epoch, stream, seq) do nothing
"""
_QUARANTINED = """
select epoch, stream, seq, body, reason, quarantined_at from quarantine
where (? is null or stream = ?) and (? is null or quarantined_at < ?)
order by quarantined_at desc, stream, seq desc
limit ?
"""


class Outbox:
    def __init__(
        self,
        store: EdgeStore,
        max_bytes: int = 1 << 30,
        policy: Policy = "thin_oldest",
        thin_fraction: float = 0.1,
    ) -> None:
        self.store = store
        self.db = store.db  # reads; writes go through the store's transactions
        self.max_bytes = max_bytes
        self.policy: Policy = policy
        self.thin_fraction = thin_fraction
        row = self.db.execute("select value from meta where key = 'epoch'").fetchone()
        if row is None:
            self.epoch = uuid.uuid4().hex
            with store.transaction() as db:
                db.execute("insert into meta values ('epoch', ?)", (self.epoch,))
        else:
            self.epoch = row[0]
        self._next: dict[str, int] = dict(self.db.execute("select stream, next_seq from streams"))
        self._dropped: dict[str, int] = dict(self.db.execute("select stream, dropped from streams"))
        self._bytes = self.db.execute(
            "select coalesce(sum(length(body)), 0) from records"
        ).fetchone()[0]
        self._depth: dict[str, int] = dict(
            self.db.execute("select stream, count(*) from records group by stream")
        )
        self._lanes: dict[str, _Lanes] = {}
        # Runs taken and not yet accepted or requeued, per stream: first seq -> last seq.
        # Only these can be accepted, so no ack can delete what this edge has not sent.
        self._sent: dict[str, dict[int, int]] = {}
        # Runs handed out and not yet accepted or quarantined, requeued ones included: the
        # collector may have committed them already (an ack lost with the connection), so
        # the bound never deletes them; a readings_dropped record counts only readings that
        # can no longer arrive. Memory only: a restarted agent does not know what its
        # predecessor sent.
        self._handed_out: dict[str, set[tuple[int, int]]] = {}
        # drop_newest: the readings_dropped event of the current run of refusals, and its
        # number in the events stream (extended while unsent; see _refused).
        self._pending_refusal: ReadingsDropped | None = None
        self._pending_refusal_seq = -1
        self._quarantined = self.db.execute("select count(*) from quarantine").fetchone()[0]
        self.last_refusal: Refusal | None = self._last_refusal()
        for stream in self._next:
            self.requeue(stream)
        self.over_bound_events = False
        self._enforcing = False
        self.on_append: Callable[[], None] | None = None  # wakes the publisher
        store.on_commit.append(self._committed)
        store.on_rollback.append(self._reload)

    # -- append ---------------------------------------------------------------------------

    def append(self, stream: str, record: Appendable) -> int:
        return self.append_many([(stream, record)])[0]

    def append_many(self, items: Iterable[tuple[str, Appendable]]) -> list[int]:
        """Number records and commit them in one transaction; their sequence numbers, in
        order (-1: a reading refused by the drop_newest policy).

        A record is a contract model, checked as it was built, or a CheckedReading
        (edge_agent/records.py): what is stored is the JSON the model serialises to, with
        its number.
        """
        now = time.time()
        rows: list[tuple[str, int, float, str]] = []
        seqs: list[int] = []
        next_seq = self._next
        numbered_from = dict(next_seq)  # to give the numbers back if the call is refused
        size = 0
        refused = refused_first = 0
        full = self._bytes >= self.max_bytes
        try:
            for stream, record in items:
                # Exact type checks: cheap, and no subclass slips in.
                if type(record) is not CheckedReading and type(record) not in _RECORD_TYPES:
                    kinds = ", ".join(m.__name__ for m in RECORD_MODELS)
                    raise TypeError(
                        f"an outbox record is a contract model ({kinds}) or a "
                        f"CheckedReading, not {type(record).__name__}"
                    )
                if full and stream == READINGS and self.policy == "drop_newest":
                    # Its number is spent: the refusal is a hole of the stream, and the
                    # readings_dropped record names it.
                    refused_first = next_seq.get(stream, 0) if not refused else refused_first
                    next_seq[stream] = next_seq.get(stream, 0) + 1
                    seqs.append(-1)
                    refused += 1
                    continue
                seq = next_seq.get(stream, 0)
                if isinstance(record, CheckedReading):
                    body = record.body(seq)
                else:
                    body = numbered(record.model_dump_json(), seq)
                next_seq[stream] = seq + 1
                rows.append((stream, seq, now, body))
                seqs.append(seq)
                size += len(body)
        except BaseException:
            self._next = numbered_from
            raise
        # Numbers spent on refusals commit with the record that names them.
        with self.store.transaction() if refused else contextlib.nullcontext():
            if rows or refused:
                self._insert(rows, size, {r[0] for r in rows} | ({READINGS} if refused else set()))
            if refused:
                self._refused(refused_first, refused)
        if self._bytes > self.max_bytes:
            self._enforce_bound()
        return seqs

    def _insert(
        self, rows: list[tuple[str, int, float, str]], size: int, touched: set[str]
    ) -> None:
        with self.store.grouped() as db:
            db.executemany("insert into records values (?, ?, ?, ?)", rows)
            db.executemany(
                "insert into streams (stream, next_seq) values (?, ?)"
                " on conflict (stream) do update set next_seq = excluded.next_seq",
                [(s, self._next[s]) for s in touched],
            )
            self._bytes += size
            for stream in touched:
                added = len(rows) if len(touched) == 1 else sum(r[0] == stream for r in rows)
                self._depth[stream] = self._depth.get(stream, 0) + added
                if stream not in self._lanes:
                    self._lanes[stream] = _Lanes(0, 0, 0)

    def flush(self) -> None:
        """Commit the store's open group commit, if any (the publisher wakes)."""
        self.store.flush()

    def _committed(self) -> None:
        if self.on_append is not None:
            self.on_append()

    def _reload(self) -> None:
        """After a rollback: counters and numbering as the file has them."""
        self._next = dict(self.db.execute("select stream, next_seq from streams"))
        self._depth = dict(self.db.execute("select stream, count(*) from records group by stream"))
        self._bytes = self.db.execute(
            "select coalesce(sum(length(body)), 0) from records"
        ).fetchone()[0]

    # -- send -----------------------------------------------------------------------------

    def take(self, stream: str, limit: int) -> list[tuple[int, str]]:
        """The next contiguous run to send: the live lane first, then the backlog."""
        lanes = self._lanes.get(stream)
        if lanes is None:
            return []
        self.flush()  # only committed records may leave
        end = self._next.get(stream, 0)
        if lanes.live < end:
            run = self._run(stream, lanes.live, end, limit)
            if run:
                lanes.live = run[-1][0] + 1
                return self._sending(stream, run)
            lanes.live = end
        if lanes.backlog < lanes.live_from:
            run = self._run(stream, lanes.backlog, lanes.live_from, limit)
            lanes.backlog = run[-1][0] + 1 if run else lanes.live_from
            return self._sending(stream, run)
        return []

    def _sending(self, stream: str, run: list[tuple[int, str]]) -> list[tuple[int, str]]:
        if run:
            self._sent.setdefault(stream, {})[run[0][0]] = run[-1][0]
            self._handed_out.setdefault(stream, set()).add((run[0][0], run[-1][0]))
        return run

    def _run(self, stream: str, start: int, end: int, limit: int) -> list[tuple[int, str]]:
        rows = self.db.execute(
            "select seq, body from records where stream = ? and seq >= ? and seq < ?"
            " order by seq limit ?",
            (stream, start, end, limit),
        ).fetchall()
        # A message is a contiguous run: stop at the first hole (thinned or acked records).
        for i in range(1, len(rows)):
            if rows[i][0] != rows[i - 1][0] + 1:
                return rows[:i]
        return rows

    def sent(self, stream: str, epoch: str, first_seq: int, last_seq: int) -> bool:
        """Whether first..last is exactly a run taken from this outbox and not yet settled
        (accepted, quarantined, or requeued)."""
        return epoch == self.epoch and self._sent.get(stream, {}).get(first_seq) == last_seq

    def accept(self, stream: str, epoch: str, first_seq: int, last_seq: int) -> int:
        """The collector committed first..last: delete them. Only a run this outbox handed
        out and still awaits is deleted; anything else (another epoch, a range never sent
        as one message, a run already settled) deletes nothing and returns 0."""
        if not self.sent(stream, epoch, first_seq, last_seq):
            return 0
        del self._sent[stream][first_seq]
        with self.store.transaction():
            removed = self.db.execute(
                "delete from records where stream = ? and seq between ? and ?"
                " returning length(body)",
                (stream, first_seq, last_seq),
            ).fetchall()
        self._forget(stream, removed)
        handed_out = self._handed_out.get(stream, set())
        handed_out -= {r for r in handed_out if first_seq <= r[0] and r[1] <= last_seq}
        return len(removed)

    def quarantine(
        self,
        stream: str,
        epoch: str,
        first_seq: int,
        last_seq: int,
        reason: str,
        runs: Sequence[tuple[int, int, str]] = (),
    ) -> int:
        """The collector settled first..last and will never commit some of it as sent: the
        refused records move, as they were sent, with their reason, out of the sending queue
        into the quarantine; the rest of the range was committed and is deleted (one
        transaction). `runs` (first, last, reason) name the refused records; none: all of
        first..last, for `reason`. The same rule as `accept` decides what may be settled.
        Returns how many records were quarantined."""
        if not self.sent(stream, epoch, first_seq, last_seq):
            return 0
        refused = list(runs) or [(first_seq, last_seq, reason)]
        now = time.time()
        with self.store.transaction():  # accept's delete joins it: one commit for both
            moved = 0
            for run_first, run_last, run_reason in refused:
                if first_seq <= run_first <= run_last <= last_seq:
                    moved += self.db.execute(
                        _QUARANTINE, (epoch, run_reason, now, stream, run_first, run_last)
                    ).rowcount
            self.accept(stream, epoch, first_seq, last_seq)
        self._quarantined += moved
        self.last_refusal = Refusal(
            stream, epoch, refused[0][0], refused[-1][1], reason, datetime.fromtimestamp(now, UTC)
        )
        log.error(
            "the collector refused %d of %s %d..%d for good: quarantined (%s)",
            moved,
            stream,
            first_seq,
            last_seq,
            reason,
        )
        return moved

    def _forget(self, stream: str, removed: list[tuple[int]]) -> None:
        self._bytes -= sum(r[0] for r in removed)
        self._depth[stream] = self._depth.get(stream, 0) - len(removed)

    def quarantined(
        self, limit: int = 100, stream: str | None = None, before: float | None = None
    ) -> list[QuarantinedRecord]:
        """Quarantined records, newest first."""
        rows = self.db.execute(_QUARANTINED, (stream, stream, before, before, limit)).fetchall()
        return [
            QuarantinedRecord(
                stream=row[1],
                epoch=row[0],
                seq=row[2],
                record=json.loads(row[3]),
                reason=row[4],
                quarantined_at=datetime.fromtimestamp(row[5], UTC),
            )
            for row in rows
        ]

    def _last_refusal(self) -> Refusal | None:
        row = self.db.execute(
            "select epoch, stream, reason, quarantined_at, min(seq), max(seq) from quarantine"
            " where quarantined_at = (select max(quarantined_at) from quarantine)"
            " group by epoch, stream, reason, quarantined_at limit 1"
        ).fetchone()
        if row is None:
            return None
        epoch, stream, reason, at, first, last = row
        return Refusal(stream, epoch, first, last, reason, datetime.fromtimestamp(at, UTC))

    def requeue(self, stream: str) -> None:
        """Offer every unacknowledged record again; what is appended from now on goes first."""
        row = self.db.execute("select min(seq) from records where stream = ?", (stream,)).fetchone()
        end = self._next.get(stream, 0)
        oldest = row[0] if row[0] is not None else end
        self._lanes[stream] = _Lanes(backlog=oldest, live_from=end, live=end)
        self._sent.pop(stream, None)  # what was sent is offered again, and awaited anew
        # Runs all of whose records are gone (accepted under other boundaries) guard nothing.
        self._handed_out[stream] = {r for r in self._handed_out.get(stream, ()) if r[1] >= oldest}

    def streams(self) -> list[str]:
        return list(self._lanes)

    def depth(self, stream: str) -> int:
        return self._depth.get(stream, 0)

    # -- bound ----------------------------------------------------------------------------

    def _enforce_bound(self) -> None:
        if self.policy == "drop_newest" or self._enforcing:
            return  # drop_newest refuses readings at append instead
        count = self._depth.get(READINGS, 0)
        if count == 0:
            if not self.over_bound_events:
                log.error("outbox over its bound with trace events only: they are all kept")
            self.over_bound_events = True
            return
        window = self._never_handed_out(READINGS, max(1, int(count * self.thin_fraction)))
        if self.policy == "thin_oldest" and len(window) > 1:
            window = window[1::2]
        if not window:
            return  # all of it is on its way: the bound waits for the acks
        with self.store.transaction():
            self.db.executemany(
                "delete from records where stream = ? and seq = ?",
                [(READINGS, seq) for seq, _ in window],
            )
        self._bytes -= sum(size for _, size in window)
        self._depth[READINGS] -= len(window)
        self._enforcing = True
        try:
            self._count_dropped(READINGS, len(window), window[0][0], window[-1][0])
        finally:
            self._enforcing = False

    def _never_handed_out(self, stream: str, n: int) -> list[tuple[int, int]]:
        """(seq, bytes) of the oldest `n` records of `stream` outside every run handed out
        and not yet settled."""
        runs = sorted(self._handed_out.get(stream, ()))
        found: list[tuple[int, int]] = []
        after = -1
        while len(found) < n:
            page = self.db.execute(
                "select seq, length(body) from records where stream = ? and seq > ?"
                " order by seq limit ?",
                (stream, after, n),
            ).fetchall()
            if not page:
                break
            found += [row for row in page if not any(a <= row[0] <= b for a, b in runs)]
            after = page[-1][0]
        return found[:n]

    def _refused(self, first_seq: int, count: int) -> None:
        """drop_newest refused `count` readings numbered from `first_seq`. A run of refusals
        is one readings_dropped event, extended while the run lasts and the event has not
        left (an outage refuses every poll: one event, not one per poll)."""
        pending = self._pending_refusal
        if pending is not None and pending.last_seq + 1 == first_seq:
            seq = self._pending_refusal_seq
            handed_out = any(a <= seq <= b for a, b in self._handed_out.get(EVENTS, ()))
            if not handed_out:
                extended = pending.model_copy(
                    update={"last_seq": first_seq + count - 1, "count": pending.count + count}
                )
                old_body = numbered(pending.model_dump_json(), seq)
                body = numbered(extended.model_dump_json(), seq)
                with self.store.transaction() as db:
                    changed = db.execute(
                        "update records set body = ? where stream = ? and seq = ? and body = ?",
                        (body, EVENTS, seq, old_body),
                    ).rowcount
                if changed:
                    self._bytes += len(body) - len(old_body)
                    self._pending_refusal = extended
                    self._dropped[READINGS] = self._dropped.get(READINGS, 0) + count
                    self._store_dropped(READINGS)
                    return
        self._count_dropped(READINGS, count, first_seq, first_seq + count - 1)

    def _count_dropped(
        self, stream: str, count: int, first_seq: int | None = None, last_seq: int | None = None
    ) -> None:
        self._dropped[stream] = self._dropped.get(stream, 0) + count
        self._store_dropped(stream)
        log.warning(
            "outbox full (%d of %d bytes): %s dropped %d readings",
            self._bytes,
            self.max_bytes,
            self.policy,
            count,
        )
        if first_seq is not None and last_seq is not None:
            marker = ReadingsDropped(
                seq=UNNUMBERED,
                time=datetime.now(UTC),
                stream=stream,
                count=count,
                first_seq=first_seq,
                last_seq=last_seq,
                policy=self.policy,
            )
            self._pending_refusal_seq = self.append(EVENTS, marker)
            self._pending_refusal = marker if self.policy == "drop_newest" else None

    def _store_dropped(self, stream: str) -> None:
        with self.store.transaction():
            self.db.execute(
                "insert into streams (stream, next_seq, dropped) values (?, ?, ?)"
                " on conflict (stream) do update set dropped = excluded.dropped",
                (stream, self._next.get(stream, 0), self._dropped[stream]),
            )

    # -- status ---------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        now = time.time()
        out = OutboxStats(epoch=self.epoch, bytes=self._bytes, max_bytes=self.max_bytes)
        for stream in sorted(set(self._next) | set(self._dropped)):
            depth = self.depth(stream)
            oldest = self.db.execute(
                "select created_at from records where stream = ? order by seq limit 1", (stream,)
            ).fetchone()
            out.streams[stream] = StreamStats(
                depth=depth,
                oldest_age_s=round(now - oldest[0], 3) if oldest else None,
                dropped=self._dropped.get(stream, 0),
            )
        if self._bytes >= self.max_bytes:
            out.alarms.append(
                f"outbox full: {self._bytes} of {self.max_bytes} bytes; readings are being "
                f"dropped by policy {self.policy}"
            )
        if out.dropped:
            out.alarms.append(f"{out.dropped} readings dropped since this outbox was created")
        out.quarantined = self._quarantined
        out.last_refusal = refusal = self.last_refusal
        if self._quarantined and refusal is not None:
            out.alarms.append(
                f"{self._quarantined} records quarantined: the collector refused them for "
                f"good; last {refusal.stream} {refusal.first_seq}..{refusal.last_seq} at "
                f"{refusal.at.isoformat(timespec='seconds')}: {refusal.reason[:300]} "
                "(see GET /api/v1/quarantine)"
            )
        return out
