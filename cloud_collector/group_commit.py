"""Group commit: many messages of readings in one transaction, each acknowledged after it.

The common case at plant speed is a message of fresh readings: numbered past everything
its stream has committed, valid as a whole. For a group of such messages the collector
does per group what ingest.py does per message, in a handful of statements:

- read each message outside the transaction (messages.read_readings), write its readings
  as binary COPY rows (reading_rows.py) and add them to the group's rollups in Python
  (rollups.Parts), while the group before it commits;
- take, per stream in sequence order, each message that starts past the stream's
  high-water mark (which then moves past it), or that lies wholly inside a hole the stream
  has recorded (the hole is cut around it): its readings cannot be in the table yet, so
  they go straight into `readings` in one binary COPY for the whole group, and every row
  is inserted (a row that is not fails the COPY, and with it the group). Holes are filled
  this way whenever collectors share a stream's messages: the broker hands an edge's
  consecutive messages to different collectors, and the one that commits the later
  message first leaves a hole that the other's message then fills;
- the COPY goes first, against the marks as last committed; then the group's streams are
  locked (`edge_streams`, in stream_id order, so that two collectors cannot deadlock) and
  the group classified again against the locked marks and holes. Two collectors sharing
  edges thus wait for each other's locks only during the short statements after the
  COPY (measured with two collectors at 100 records a message: lanes waiting for a
  stream's lock 1.35 of 4 on average before, 0.34 after). A group another commit has
  overtaken in between (the messages it copied are not the ones fresh now) is rolled back
  and tried again (`_Overtaken`);
- the batches they name, their rollups (the spec limits read in the transaction), the
  commit records, the holes before them and the new high-water marks: one statement
  each, sent together in a pipeline;
- commit; the caller then acknowledges each message.

A message that reaches back to its stream's mark other than into a hole (a resend, a
regrouped backlog) and the ones behind it in that stream are left for the one-by-one path
(ingest.ingest), which compares them with what is committed; so is every message when the
group's transaction fails for a reason other than the database being away: ingest then
finds which message and which records are at fault, and the rest are committed as before.
Acks, commit records, gaps and rollups come out as ingest makes them one message at a time
(tests/cloud_collector/test_group_commit.py compares the two on the same messages).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from cloud_collector import reading_rows, rollups
from cloud_collector.binary_arrays import packed
from cloud_collector.ingest import (
    READING_COLUMNS,
    Outcome,
    register_stream,
    retrying,
    unavailable,
)
from cloud_collector.messages import Readings
from protocols.mqtt.contract import Ack

log = logging.getLogger(__name__)

StreamKey = tuple[str, str, str]  # edge, stream, epoch

_COPY = f"copy readings ({READING_COLUMNS}) from stdin (format binary)"
_STREAMS = """
select stream_id, edge_id, stream, epoch, high_water, high_water_time from edge_streams
where stream_id = any(%s) order by stream_id
"""
# Held to the commit: the marks the group is classified by are the marks it moves.
_LOCK_STREAMS = _STREAMS + " for update"
_SPECS = """
select device, tag, low, high from tag_specs
where (device, tag) in (select * from unnest(%b::text[], %b::text[]))
"""
# As ingest's batches_seen: the first line and edge to name a batch make its row.
_BATCHES = """
insert into batches (batch_id, line_id, edge_id)
select * from unnest(%b::text[], %b::text[], %b::text[]) on conflict (batch_id) do nothing
"""
_COMMIT_RECORDS = """
insert into stream_commits (stream_id, first_seq, last_seq, records, inserted)
select * from unnest(%b::int4[], %b::int8[], %b::int8[], %b::int4[], %b::int4[])
"""
_ADD_GAPS = """
insert into sequence_gaps (stream_id, first_missing, last_missing, before_time, after_time)
select * from unnest(%b::int4[], %b::int8[], %b::int8[], %b::timestamptz[], %b::timestamptz[])
on conflict do nothing
"""
# The recorded holes that wholly hold a message reaching back to its stream's mark: read
# after the streams are locked, so two collectors never fill one hole twice.
_HOLES_HOLDING = """
select distinct g.stream_id, g.first_missing, g.last_missing, g.before_time, g.after_time
from sequence_gaps g
join unnest(%b::int4[], %b::int8[], %b::int8[]) m(stream_id, first_seq, last_seq)
  on g.stream_id = m.stream_id and g.first_missing <= m.first_seq and g.last_missing >= m.last_seq
"""
# Holes a fill cut: removed before their remaining pieces go in (a piece may start where
# its hole did).
_REMOVE_HOLES = """
delete from sequence_gaps g using unnest(%b::int4[], %b::int8[]) h(stream_id, first_missing)
where g.stream_id = h.stream_id and g.first_missing = h.first_missing
"""
_SET_HIGH_WATER = """
update edge_streams e set high_water = m.last_seq, high_water_time = m.last_time
from unnest(%b::int4[], %b::int8[], %b::timestamptz[]) m(stream_id, last_seq, last_time)
where e.stream_id = m.stream_id
"""


class _StaleStream(Exception):
    """A cached stream id names no stream, or another one (the table was emptied)."""


class _Overtaken(Exception):
    """Between the COPY and the streams' locks another transaction committed what changes
    which of the group's messages are fresh: the group is tried again from the start."""


# Groups overtaken this many times in a row go one by one.
_OVERTAKEN_TRIES = 3


@dataclass
class _Plan:
    """What a group commits, classified against its streams' marks and holes."""

    result: GroupResult
    taken: list[int]  # positions, in the group's order
    commits: list[list[Any]]
    gaps: list[list[Any]]
    moved: list[list[Any]]
    holes: _Holes


@dataclass
class Prepared:
    """A message of fresh-looking readings, read, rolled up and written as COPY rows,
    waiting for its group."""

    message: Readings
    parts: rollups.Parts
    rows: reading_rows.Rows
    rows_stream: int | None  # the stream_id the rows carry (None: not known yet)

    @property
    def key(self) -> StreamKey:
        m = self.message
        return (m.edge_id, m.stream, m.epoch)


@dataclass
class GroupResult:
    """What a group commit settled, by position in the group, and what it left for the
    one-by-one path (in the group's order)."""

    committed: dict[int, Outcome] = field(default_factory=dict)
    left: list[int] = field(default_factory=list)


Hole = tuple[int, int, datetime | None, datetime | None]  # first, last, before, after


def _append(columns: list[list[Any]], *row: Any) -> None:
    """A row added to statement parameters kept as one array per column."""
    for column, value in zip(columns, row, strict=True):
        column.append(value)


class _Holes:
    """The recorded holes of a group's streams that its late messages may fill, cut in
    memory as the group fills them (as ingest's _track_gaps cuts them one message at a
    time), and written back once."""

    def __init__(self, found: dict[int, list[Hole]]) -> None:
        self.left = found  # per stream, the holes as the group has cut them so far
        self.cut: set[tuple[int, int]] = set()  # (stream, first) of holes read and cut
        self._pieces: set[tuple[int, int]] = set()  # (stream, first) of pieces made here

    @classmethod
    async def read(
        cls,
        conn: psycopg.AsyncConnection,
        group: list[Prepared],
        ids: dict[StreamKey, int],
        marks: dict[int, tuple[int, datetime | None]],
    ) -> _Holes:
        late = [p.message for p in group if p.message.first_seq <= marks[ids[p.key]][0]]
        found: dict[int, list[Hole]] = defaultdict(list)
        if late:
            keys = [ids[(m.edge_id, m.stream, m.epoch)] for m in late]
            cur = await conn.execute(
                _HOLES_HOLDING,
                (keys, [m.first_seq for m in late], [m.last_seq for m in late]),
            )
            for stream_id, first, last, before, after in await cur.fetchall():
                found[int(stream_id)].append((int(first), int(last), before, after))
        return cls(found)

    def fill(self, stream_id: int, message: Readings) -> bool:
        """Whether `message` lies wholly inside a hole of its stream; if so the hole is cut
        around it."""
        first, last = message.first_seq, message.last_seq
        holes = self.left.get(stream_id, [])
        n = next((n for n, h in enumerate(holes) if h[0] <= first and last <= h[1]), None)
        if n is None:
            return False
        hole_first, hole_last, before, after = holes[n]
        if (stream_id, hole_first) not in self._pieces:
            self.cut.add((stream_id, hole_first))
        pieces: list[Hole] = []
        if hole_first < first:
            pieces.append((hole_first, first - 1, before, message.records[0].time))
        if last < hole_last:
            pieces.append((last + 1, hole_last, message.records[-1].time, after))
        holes[n : n + 1] = pieces
        self._pieces.update((stream_id, piece[0]) for piece in pieces)
        return True

    def changes(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """_REMOVE_HOLES' parameters (the holes read and cut) and _ADD_GAPS' (what is left
        of them)."""
        removed: list[list[Any]] = [[], []]
        for stream_id, first in sorted(self.cut):
            _append(removed, stream_id, first)
        pieces: list[list[Any]] = [[], [], [], [], []]
        for stream_id, holes in self.left.items():
            for hole in holes:
                if (stream_id, hole[0]) in self._pieces:
                    _append(pieces, stream_id, *hole)
        return removed, pieces


class GroupCommit:
    """Commits groups of messages of readings for one collector process. Stream ids are
    kept once known (edge_streams rows are never deleted; an id found stale is forgotten
    and the group tried again)."""

    def __init__(self, backfill_after: timedelta) -> None:
        self.backfill_after = backfill_after
        self.streams: dict[StreamKey, int] = {}
        self.writer = reading_rows.RowWriter()

    def prepare(self, message: Readings, parts: rollups.Parts | None = None) -> Prepared:
        """The message's batches and COPY rows, ahead of its transaction, and its readings
        added to `parts` (the rollups of its group, shared by the messages of the group
        so that the common case adds each reading once)."""
        parts = parts if parts is not None else rollups.Parts()
        parts.add(message.records)
        stream_id = self.streams.get((message.edge_id, message.stream, message.epoch))
        return Prepared(message, parts, self._rows(message, stream_id), stream_id)

    def _rows(self, message: Readings, stream_id: int | None) -> reading_rows.Rows:
        before = message.received - self.backfill_after
        # Rows of a stream not known yet carry 0, and are written again once it is.
        stream = stream_id if stream_id is not None else 0
        return self.writer.rows(message.records, stream, message.received, before)

    async def commit(self, conn: psycopg.AsyncConnection, group: list[Prepared]) -> GroupResult:
        """Commit what of `group` is fresh in one transaction. Raises only when the
        database is unavailable (after retrying deadlocks and serialization failures);
        a failure of the group's own leaves every message to the one-by-one path."""
        if not group:
            return GroupResult()

        async def attempt() -> GroupResult:
            made: dict[StreamKey, int] = {}
            try:
                async with conn.transaction():
                    result = await self._commit(conn, group, made)
            except _StaleStream:
                self.streams.clear()
                raise
            self.streams.update(made)
            return result

        what = f"group of {len(group)} messages"
        try:
            for tries in range(1, _OVERTAKEN_TRIES + 1):
                try:
                    try:
                        return await retrying(attempt, what)
                    except _StaleStream:
                        return await retrying(attempt, what)
                except _Overtaken as overtaken:
                    if tries == _OVERTAKEN_TRIES:
                        raise
                    log.info("%s overtaken (%s); classifying it again", what, overtaken)
            raise AssertionError("unreachable")
        except Exception as err:
            if unavailable(err, conn):
                raise
            log.warning(
                "%s failed (%s: %s); settling its messages one by one",
                what,
                type(err).__name__,
                str(err).strip().splitlines()[0] if str(err).strip() else "",
            )
            return GroupResult(left=list(range(len(group))))

    async def _marks(
        self, conn: psycopg.AsyncConnection, ids: dict[StreamKey, int], query: str
    ) -> dict[int, tuple[int, datetime | None]]:
        """The high-water marks of the group's streams (`query`: _STREAMS, or _LOCK_STREAMS
        to hold them to the commit)."""
        cur = await conn.execute(query, (sorted(set(ids.values())),))
        found = {int(r[0]): ((r[1], r[2], r[3]), int(r[4]), r[5]) for r in await cur.fetchall()}
        marks: dict[int, tuple[int, datetime | None]] = {}
        for key, stream_id in ids.items():
            if stream_id not in found or found[stream_id][0] != key:
                raise _StaleStream(f"stream id {stream_id} is not {key} any more")
            marks[stream_id] = (found[stream_id][1], found[stream_id][2])
        return marks

    async def _plan(
        self,
        conn: psycopg.AsyncConnection,
        group: list[Prepared],
        ids: dict[StreamKey, int],
        marks: dict[int, tuple[int, datetime | None]],
    ) -> _Plan:
        """Per stream in sequence order: fresh messages and hole fills are this group's;
        from the first other one reaching back to the mark, the stream's messages go one
        by one."""
        result = GroupResult()
        by_stream: dict[int, list[int]] = defaultdict(list)
        for position, prepared in enumerate(group):
            by_stream[ids[prepared.key]].append(position)
        holes = await _Holes.read(conn, group, ids, marks)
        taken: list[int] = []
        commits: list[list[Any]] = [[], [], [], [], []]
        gaps: list[list[Any]] = [[], [], [], [], []]
        moved: list[list[Any]] = [[], [], []]
        for stream_id, positions in by_stream.items():
            high_water, high_water_time = marks[stream_id]
            ordered = sorted(positions, key=lambda p: group[p].message.first_seq)
            for n, position in enumerate(ordered):
                message = group[position].message
                if message.first_seq <= high_water:
                    if holes.fill(stream_id, message):
                        count = len(message.records)
                        _append(
                            commits, stream_id, message.first_seq, message.last_seq, count, count
                        )
                        taken.append(position)
                        continue
                    result.left.extend(ordered[n:])
                    break
                if message.first_seq > high_water + 1:
                    _append(
                        gaps,
                        stream_id,
                        high_water + 1,
                        message.first_seq - 1,
                        high_water_time,
                        message.records[0].time,
                    )
                count = len(message.records)
                _append(commits, stream_id, message.first_seq, message.last_seq, count, count)
                high_water, high_water_time = message.last_seq, message.records[-1].time
                taken.append(position)
            if (high_water, high_water_time) != marks[stream_id]:
                _append(moved, stream_id, high_water, high_water_time)
        result.left.sort()
        taken.sort()  # the group's order: the first to name a batch makes its row
        return _Plan(result, taken, commits, gaps, moved, holes)

    async def _commit(
        self, conn: psycopg.AsyncConnection, group: list[Prepared], made: dict[StreamKey, int]
    ) -> GroupResult:
        ids: dict[StreamKey, int] = {}
        for key in dict.fromkeys(p.key for p in group):
            known = self.streams.get(key)
            if known is None:
                known = made[key] = await register_stream(
                    conn, {"edge": key[0], "stream": key[1], "epoch": key[2]}
                )
            ids[key] = known
        # The readings go in before the streams are locked, classified against the marks as
        # last committed: two collectors sharing an edge's messages (the broker hands them
        # out in turn) then hold each other up only for the short statements after the
        # COPY, not for the COPY, most of a group's time in the database. Rows of a message
        # that is not fresh after all fail the COPY (the unique index on stream and
        # number), or are found when the locked marks classify the group again: either
        # way nothing of the group is committed.
        plan = await self._plan(conn, group, ids, await self._marks(conn, ids, _STREAMS))
        if not plan.taken:
            return plan.result
        taken = plan.taken

        batches: dict[str, tuple[str, str]] = {}
        async with conn.cursor() as copy_cursor, copy_cursor.copy(_COPY) as copy:
            await copy.write(reading_rows.SIGNATURE)
            for position in taken:
                prepared = group[position]
                message = prepared.message
                rows = prepared.rows
                if prepared.rows_stream != ids[prepared.key]:  # a stream new to this process
                    rows = self._rows(message, ids[prepared.key])
                for batch, line in rows.batches.items():
                    batches.setdefault(batch, (line, message.edge_id))
                await copy.write(rows.data)
            await copy.write(reading_rows.TRAILER)

        plan = await self._plan(conn, group, ids, await self._marks(conn, ids, _LOCK_STREAMS))
        if plan.taken != taken:
            raise _Overtaken(f"{len(taken)} messages copied, {len(plan.taken)} fresh now")
        result, holes = plan.result, plan.holes
        commits, gaps, moved = plan.commits, plan.gaps, plan.moved

        parts = group[taken[0]].parts
        if len(parts.sources) != len(taken) or any(group[p].parts is not parts for p in taken):
            # Not every message added to these rollups is committed here: count again.
            parts = rollups.Parts()
            for position in taken:
                parts.add(group[position].message.records)
        spec_keys = parts.spec_keys()
        specs: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        if spec_keys:
            cur = await conn.execute(_SPECS, ([d for d, _ in spec_keys], [t for _, t in spec_keys]))
            specs = {(d, t): (low, high) for d, t, low, high in await cur.fetchall()}

        async with conn.pipeline():
            if batches:
                await conn.execute(
                    _BATCHES,
                    (
                        list(batches),
                        [line for line, _ in batches.values()],
                        [edge for _, edge in batches.values()],
                    ),
                )
            if parts.tags:
                stats = packed(parts.stats_arrays(specs), rollups.STATS_PARTS_KINDS)
                await conn.execute(rollups.STATS_PARTS_UPSERT, stats)
                minutes = packed(parts.minutes_arrays(), rollups.MINUTES_PARTS_KINDS)
                await conn.execute(rollups.MINUTES_PARTS_UPSERT, minutes)
            await conn.execute(_COMMIT_RECORDS, commits)
            if holes.cut:
                removed, pieces = holes.changes()
                await conn.execute(_REMOVE_HOLES, removed)
                if pieces[0]:
                    await conn.execute(_ADD_GAPS, pieces)
            if gaps[0]:
                await conn.execute(_ADD_GAPS, gaps)
            if moved[0]:
                await conn.execute(_SET_HIGH_WATER, moved)

        for position in taken:
            message = group[position].message
            ack = Ack(
                edge_id=message.edge_id,
                stream=message.stream,
                epoch=message.epoch,
                first_seq=message.first_seq,
                last_seq=message.last_seq,
            )
            result.committed[position] = Outcome(ack, len(message.records))
        return result
