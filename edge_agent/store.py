"""The edge's one SQLite file and the transaction its parts share.

Several parts keep their state here: the outbox (records waiting for the collector's ack and
the quarantine), the batch context (each line's active batch and the ids it started), the
batch numbering (each line's sequence), the stations (door
bindings, a running batch's inputs, outputs and operators), the lots on hold (the
shipping doors' list, kept for offline use) and the site configurator (the site versions
pushed to it). They share one file so that a change and the event it causes commit
together: a batch start and its `batch_started` event, a batch end, its `batch_ended` and
its TransformationEvent, a door binding and what it says. After a crash or a power cut
both happened or neither did.

The store creates every table, opens the file durably (WAL, `synchronous=FULL`) and owns
the transaction: `transaction()` for changes that must be atomic (nested uses join the
outer one), `grouped()` for the outbox's appends, which may share one commit within
`commit_interval_s` (group commit). A rollback reloads what the parts keep in memory
(`on_rollback`), so memory never runs ahead of the file.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Every table of the edge's file, by the part that uses it (its statements are in that
# part's module).
_SCHEMA = """
-- outbox (edge_agent/outbox.py)
create table if not exists meta (key text primary key, value text not null);
create table if not exists streams (
    stream   text primary key,
    next_seq integer not null,
    dropped  integer not null default 0
);
create table if not exists records (
    stream     text not null,
    seq        integer not null,
    created_at real not null,
    body       text not null,
    primary key (stream, seq)
) without rowid;
-- Records the collector refused for good (the ack said `refused`): kept as sent, out of
-- the sending queue, for someone to look at.
create table if not exists quarantine (
    epoch          text not null,
    stream         text not null,
    seq            integer not null,
    body           text not null,
    reason         text not null,
    quarantined_at real not null,
    primary key (epoch, stream, seq)
) without rowid;

-- batch context (edge_agent/batch_context.py)
create table if not exists active_batch (
    line_id    text primary key,
    batch_id   text not null,
    started_at text not null,
    started_by text not null
);
-- Every batch id started on this edge, however it was given: a rule-made id skips these.
create table if not exists batch_ids (
    batch_id   text primary key,
    line_id    text not null,
    started_at text not null
) without rowid;

-- batch numbering (edge_agent/batch_numbers.py): each line's sequence, in the period it
-- counts in (a day, a shift, ...); a new period starts it again.
create table if not exists batch_sequence (
    line_id  text primary key,
    period   text not null,
    next_seq integer not null
);

-- stations (edge_agent/stations.py)
create table if not exists dock_binding (
    dock_id  text primary key,
    type     text not null,
    doc_id   text not null,
    bound_at text not null,
    bound_by text not null
);
-- the trading parties a bound document names (device_profiles/sites.py DockParty as JSON);
-- a table of its own so that an edge file made before it gains it without a migration
create table if not exists dock_document_parties (
    dock_id text primary key,
    parties text not null
);
create table if not exists batch_items (
    line_id  text not null,
    batch_id text not null,
    role     text not null,   -- input, output, operator
    position integer not null,
    item     text not null,   -- the contract Item as JSON, or the operator id
    primary key (line_id, batch_id, role, position)
);
-- The place a warehouse station works at: the place label scanned there last.
create table if not exists station_place (
    station_id text primary key,
    place      text not null,
    bound_at   text not null,
    bound_by   text not null
);
create table if not exists line_operator (
    line_id  text primary key,
    operator text not null
);

-- holds (edge_agent/holds.py): the lots on hold as the collector last published them
create table if not exists held_set (
    id   integer primary key check (id = 1),
    time text not null,     -- the collector's time of the set: a later set replaces it
    lots integer not null
);
create table if not exists held_lots (
    gtin   text not null,   -- '' when the product is not known: the lot code alone matches
    lot    text not null,
    reason text not null,
    since  text not null,
    primary key (gtin, lot)
);
create index if not exists held_lots_lot on held_lots (lot);
create table if not exists held_units (
    unit text primary key,  -- an EPC as the collector knows it, or 'sscc:' + SSCC
    gtin text not null,
    lot  text not null
);
-- site configuration versions pushed by the collector (edge_agent/reconfigure.py): the
-- ones applied (the newest is what runs, also after a restart) and the ones refused.
create table if not exists site_versions (
    version     integer primary key,
    sha256      text not null,
    content     text not null,
    received_at text not null,
    state       text not null,   -- applied, refused
    reason      text,
    changed_at  text not null
);
"""


class EdgeStore:
    def __init__(self, path: Path, commit_interval_s: float = 0.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # 0: every append commits before it returns. Above 0: appends within this interval
        # share one commit (group commit), and `flush` ends the group; a crash loses at
        # most this interval of captured data, which then never counted as taken.
        self.commit_interval_s = commit_interval_s
        # Reads use it directly; writes go through transaction() or grouped().
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=full")
        self.db.executescript(_SCHEMA)
        self.on_commit: list[Callable[[], None]] = []  # e.g. wake the publisher
        self.on_rollback: list[Callable[[], None]] = []  # reload what a part keeps in memory
        self._group_started: float | None = None  # an open group commit, since when
        self._explicit = False  # inside transaction(): grouped writes neither begin nor commit

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction, committed at the end of the block and rolled back if it
        raises; nested uses join the outer one (a batch start and its event commit
        together). An open group commit is committed first, on its own."""
        if self._explicit:
            yield self.db
            return
        self.flush()
        self.db.execute("begin")
        self._explicit = True
        try:
            yield self.db
        except BaseException:
            self._explicit = False
            self._rollback()
            raise
        self._explicit = False
        self.db.execute("commit")
        self._committed()

    @contextmanager
    def grouped(self) -> Iterator[sqlite3.Connection]:
        """Writes that join the open transaction: an explicit one, or the group commit
        (begun if none is open, committed at the end of the block once it is
        `commit_interval_s` old). If the block raises outside an explicit transaction, the
        group is rolled back; inside one, the explicit transaction decides."""
        if self._explicit:
            yield self.db
            return
        now = time.monotonic()
        if not self.db.in_transaction:
            self.db.execute("begin")
            self._group_started = now
        try:
            yield self.db
        except BaseException:
            self._rollback()
            raise
        if self._group_started is None or now - self._group_started >= self.commit_interval_s:
            self.flush()

    def flush(self) -> None:
        """Commit the open group, if any."""
        if self.db.in_transaction and not self._explicit:
            self.db.execute("commit")
            self._group_started = None
            self._committed()

    def _committed(self) -> None:
        for listener in self.on_commit:
            listener()

    def _rollback(self) -> None:
        self.db.execute("rollback")
        self._group_started = None
        for listener in self.on_rollback:
            listener()

    def close(self) -> None:
        self.flush()
        self.db.close()
