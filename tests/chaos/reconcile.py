"""Row-for-row reconciliation of what a fleet's devices served with what the database holds.

Every simulated device counts: each read it answers carries the next number in its counting
tag, so what it produced is exactly the values 1..served. After a fault and its recovery the
database must hold each of them once (nothing doubled, nothing invented), and each one it
lacks must be explained by a record the system itself wrote:

- `readings_dropped`: the edge's outbox was full and its policy deleted readings; the
  missing reading's sequence number lies between its present neighbours', inside a dropped
  range of the same edge and epoch;
- `device_offline`: the edge recorded the device as gone between the missing reading's
  present neighbours (a read the device answered but the edge never received);
- in flight at a kill: the fault injector SIGKILLed the edge process right after the device
  served these values, before the edge could commit them (a power cut's loss, which the
  edge bounds to the poll in flight; the injector names them, nothing in the data can).

Independently of the counters, the numbering of each edge's readings stream may have holes
only inside its dropped ranges, as many as the ranges' counts say (a drop record that claims
more than is missing is overstated), the events stream none at all, and no record of the
fleet may be refused, dead-lettered or in conflict.

`judge` is pure (its own tests feed it rows); `load` reads the rows from the database.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg


@dataclass(frozen=True)
class DeviceLedger:
    """What one simulated device produced: the values 1..served of its counting tag."""

    edge_id: str
    device: str
    tag: str
    served: int
    # Served to an edge process that was SIGKILLed before it could commit them.
    in_flight_at_kill: frozenset[int] = frozenset()
    # (epoch, next number) of the edge's readings stream as its outbox has it at the end:
    # every number below it was spent, so each one the database lacks is a hole to explain.
    numbered: tuple[str, int] | None = None


@dataclass(frozen=True)
class CommittedReading:
    edge_id: str
    epoch: str
    seq: int
    device: str
    tag: str
    value: float | None
    time: datetime


@dataclass(frozen=True)
class DroppedRange:
    """A readings_dropped record: `count` readings of first..last deleted by the outbox."""

    edge_id: str
    epoch: str
    first_seq: int
    last_seq: int
    count: int
    policy: str = ""


@dataclass(frozen=True)
class DeviceEvent:
    edge_id: str
    device: str
    kind: str  # device_offline | device_online
    time: datetime


@dataclass(frozen=True)
class Database:
    """What the database holds of a fleet's edges."""

    readings: Sequence[CommittedReading]
    dropped: Sequence[DroppedRange] = ()
    device_events: Sequence[DeviceEvent] = ()
    # (edge, epoch, first, last): holes in the numbering of events streams.
    event_holes: Sequence[tuple[str, str, int, int]] = ()
    # (edge, reason): dead letters, refusals and conflicts of the fleet's own edges.
    refused: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class Missing:
    edge_id: str
    device: str
    value: int


@dataclass
class Verdict:
    produced: int = 0
    committed: int = 0  # counting-tag readings of the ledger's devices in the database
    missing: list[Missing] = field(default_factory=list)  # unexplained
    doubled: list[tuple[str, str, float, int]] = field(default_factory=list)  # key, copies
    phantom: list[tuple[str, str, float | None]] = field(default_factory=list)
    explained: Counter[str] = field(default_factory=Counter)  # by explanation
    unexplained_holes: list[tuple[str, str, int]] = field(default_factory=list)
    overstated_drops: list[tuple[str, str, int, int]] = field(default_factory=list)
    event_holes: list[tuple[str, str, int, int]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.missing
            or self.doubled
            or self.phantom
            or self.unexplained_holes
            or self.overstated_drops
            or self.event_holes
            or self.refused
        )

    def summary(self) -> str:
        explained = ", ".join(f"{n} by {why}" for why, n in sorted(self.explained.items()))
        lines = [
            f"produced {self.produced}, committed {self.committed}, "
            f"explained gaps: {explained or 'none'}"
        ]
        for name in (
            "missing",
            "doubled",
            "phantom",
            "unexplained_holes",
            "overstated_drops",
            "event_holes",
            "refused",
        ):
            found = getattr(self, name)
            if found:
                lines.append(f"{name}: {len(found)}, first {found[:5]}")
        return "\n".join(lines)


def judge(
    ledgers: Iterable[DeviceLedger],
    db: Database,
    through: Mapping[tuple[str, str], int] | None = None,
) -> Verdict:
    """Reconcile the ledgers with the database. `through` (edge, device) -> n asks only
    whether the values 1..n have arrived (a recovery still under way), not about holes in
    the numbering, which close as a backlog drains."""
    ledgers = list(ledgers)
    verdict = Verdict()
    counting = {(ledger.edge_id, ledger.device): ledger.tag for ledger in ledgers}
    by_device: dict[tuple[str, str], list[CommittedReading]] = defaultdict(list)
    for row in db.readings:
        if counting.get((row.edge_id, row.device)) == row.tag:
            by_device[(row.edge_id, row.device)].append(row)
    drops: dict[tuple[str, str], list[DroppedRange]] = defaultdict(list)
    for drop in db.dropped:
        drops[(drop.edge_id, drop.epoch)].append(drop)
    offline: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for event in db.device_events:
        if event.kind == "device_offline":
            offline[(event.edge_id, event.device)].append(event.time)

    for ledger in ledgers:
        key = (ledger.edge_id, ledger.device)
        rows = by_device.get(key, [])
        verdict.committed += len(rows)
        copies = Counter(row.value for row in rows)
        for value, n in sorted(copies.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            if n > 1 and value is not None:
                verdict.doubled.append((ledger.edge_id, ledger.device, value, n))
        present: dict[int, CommittedReading] = {}
        for row in rows:
            v = row.value
            if v is None or v != int(v) or not 1 <= v <= ledger.served:
                verdict.phantom.append((ledger.edge_id, ledger.device, v))
            else:
                present[int(v)] = row
        upto = ledger.served if through is None else min(ledger.served, through.get(key, 0))
        verdict.produced += upto
        values = sorted(present)
        for value in range(1, upto + 1):
            if value in present:
                continue
            why = _explain(ledger, value, values, present, drops, offline)
            if why is None:
                verdict.missing.append(Missing(ledger.edge_id, ledger.device, value))
            else:
                verdict.explained[why] += 1

    if through is None:
        _numbering(ledgers, db, drops, verdict)
    fleet = {ledger.edge_id for ledger in ledgers}
    verdict.event_holes = [hole for hole in db.event_holes if hole[0] in fleet]
    verdict.refused = [r for r in db.refused if r[0] in fleet]
    return verdict


def _explain(
    ledger: DeviceLedger,
    value: int,
    values: list[int],
    present: dict[int, CommittedReading],
    drops: dict[tuple[str, str], list[DroppedRange]],
    offline: dict[tuple[str, str], list[datetime]],
) -> str | None:
    """Which record explains that `value` never arrived, if any."""
    if value in ledger.in_flight_at_kill:
        return "in flight at a kill"
    i = bisect.bisect_left(values, value)
    before = present[values[i - 1]] if i > 0 else None
    after = present[values[i]] if i < len(values) else None
    # Its sequence number lies strictly between its neighbours' (an edge numbers its polls
    # in the order it takes them); the epoch is theirs.
    neighbour = before or after
    epoch = neighbour.epoch if neighbour else None
    low = before.seq + 1 if before else 0
    high = after.seq - 1 if after else None
    for (edge_id, drop_epoch), ranges in drops.items():
        if edge_id != ledger.edge_id or (epoch is not None and drop_epoch != epoch):
            continue
        for drop in ranges:
            if drop.last_seq >= low and (high is None or drop.first_seq <= high):
                return "readings_dropped"
    for at in offline.get((ledger.edge_id, ledger.device), []):
        if (before is None or at >= before.time) and (after is None or at <= after.time):
            return "device_offline"
    return None


def _numbering(
    ledgers: list[DeviceLedger],
    db: Database,
    drops: dict[tuple[str, str], list[DroppedRange]],
    verdict: Verdict,
) -> None:
    """Holes in each readings stream's numbering: only inside dropped ranges, and exactly as
    many as the ranges count."""
    fleet = {ledger.edge_id for ledger in ledgers}
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    spent: dict[tuple[str, str], int] = {}
    for ledger in ledgers:
        if ledger.numbered is not None:
            epoch, next_seq = ledger.numbered
            seqs[(ledger.edge_id, epoch)]
            spent[(ledger.edge_id, epoch)] = next_seq - 1
    for row in db.readings:
        if row.edge_id in fleet:
            seqs[(row.edge_id, row.epoch)].append(row.seq)
    for (edge_id, epoch), numbers in sorted(seqs.items()):
        have = set(numbers)
        ranges = drops.get((edge_id, epoch), [])
        # Every number the edge spent: what its outbox says, and what its drop records name.
        upper = max([-1, *have, *(d.last_seq for d in ranges), spent.get((edge_id, epoch), -1)])
        holes = [seq for seq in range(upper + 1) if seq not in have]
        claimed = sum(drop.count for drop in ranges)
        in_ranges = []
        for seq in holes:
            if any(d.first_seq <= seq <= d.last_seq for d in ranges):
                in_ranges.append(seq)
            else:
                verdict.unexplained_holes.append((edge_id, epoch, seq))
        if len(in_ranges) > claimed:
            # More missing inside the ranges than the edge says it dropped: some were lost.
            verdict.unexplained_holes += [(edge_id, epoch, seq) for seq in in_ranges[claimed:]]
        elif len(in_ranges) < claimed:
            # Readings the edge counted as dropped arrived: its record says more is missing
            # than is.
            policies = "/".join(sorted({d.policy for d in ranges}))
            ranges_text = " ".join(
                f"{d.first_seq}..{d.last_seq}:{d.count}"
                f"(present {sum(1 for q in range(d.first_seq, d.last_seq + 1) if q in have)})"
                for d in sorted(ranges, key=lambda d: d.first_seq)
            )
            verdict.overstated_drops.append(
                (edge_id, f"{epoch} {policies} {ranges_text}", claimed, len(in_ranges))
            )


_READINGS = """
select s.edge_id, s.epoch, r.seq, r.device, r.tag, r.value, r.time
from readings r join edge_streams s using (stream_id)
where s.edge_id = any(%(edges)s) and (%(tag)s::text is null or r.tag = %(tag)s)
"""
_DROPPED = """
select s.edge_id, s.epoch, d.first_seq, d.last_seq, d.count, d.policy
from readings_dropped d
join edge_streams e on e.stream_id = d.stream_id
join edge_streams s on s.edge_id = e.edge_id and s.stream = d.dropped_stream
where e.edge_id = any(%(edges)s) and s.epoch = e.epoch
"""
_DEVICE_EVENTS = """
select s.edge_id, d.device, d.kind, d.time
from device_events d join edge_streams s using (stream_id)
where s.edge_id = any(%(edges)s)
"""
_EVENT_HOLES = """
select edge_id, epoch, first_missing, last_missing from stream_gaps
where edge_id = any(%(edges)s) and stream <> 'readings'
"""
_REFUSED = """
select edge_id, reason from dead_letters where edge_id = any(%(edges)s)
union all
select s.edge_id, 'conflict: ' || c.kind || ' ' || c.seq
from record_conflicts c join edge_streams s using (stream_id)
where s.edge_id = any(%(edges)s)
"""


async def load(
    conn: psycopg.AsyncConnection, edge_ids: Iterable[str], tag: str | None = None
) -> Database:
    """The fleet's rows (readings of `tag` only, when given: enough to follow a recovery)."""
    args = {"edges": sorted(set(edge_ids)), "tag": tag}
    readings = [
        CommittedReading(*row) for row in await (await conn.execute(_READINGS, args)).fetchall()
    ]
    dropped = [DroppedRange(*row) for row in await (await conn.execute(_DROPPED, args)).fetchall()]
    events = [
        DeviceEvent(*row) for row in await (await conn.execute(_DEVICE_EVENTS, args)).fetchall()
    ]
    holes = [tuple(row) for row in await (await conn.execute(_EVENT_HOLES, args)).fetchall()]
    refused = [tuple(row) for row in await (await conn.execute(_REFUSED, args)).fetchall()]
    return Database(readings, dropped, events, holes, refused)  # type: ignore[arg-type]
