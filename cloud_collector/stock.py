"""Each lot's (and serialized unit's) quantity per place, kept at ingest from the events
that move goods, in the transaction that stores the event (migration 0028).

What each business step does to the stock (CBV 2.0 words; a TransformationEvent's inputs
are consumed and its outputs produced at its read point, the line):

| bizStep | takes from | puts at |
| --- | --- | --- |
| receiving | (outside) | bizLocation, else readPoint |
| storing (put-away, move) | where the goods are | bizLocation, else readPoint |
| picking | where the goods are | bizLocation; none: "picked", at no place yet |
| shipping, consuming | where the goods are | (outside) |
| producing (batch outputs) | (outside) | readPoint |
| cycle_counting, stock_taking | (a count) | sets the quantity at bizLocation, else readPoint |

A count records what was counted, what the collector expected there and the difference.
A cycle count counts only the lots it names; a stock take (`stock_taking`) counts the whole
place: every lot the place held that it does not name is counted as none there (the place
itself, not the places inside it; what the collector knew when it stored the event).

**Where the goods are** when an event takes them: the event's source location (a captured
event's `sourceList` entry of type `location`); else, for a unit (SSCC, SGTIN) whose place
is known, that place; else the lot's stock, taken from the event's read point first (a pick
at a bin), then from what was picked and not put anywhere, then from places where goods wait
(docks, staging, lines: any place that is not a bin or a rack), then from bins and racks,
each the latest reached first (never from where the event puts them): a quantity larger than
one place holds is split over several. What no place holds is taken from no known place
(`stock_moves.note` says so) and counts nowhere. The place found is kept on the move, so the
answer is what the collector knew when it stored the event.

Every quantity per place is recounted from the ledger (`recount_places`, the last count
plus what came minus what left after it), so a resend or a late event leaves it right. A
partner's events never move our stock (as for recount_lots, migration 0019): their moves
are not recorded here. Places are kept under their canonical id (places.py).

**FIFO/FEFO.** The advice for picking a product at a place is its lots with stock in the
place's warehouse (the place and all inside it), not on hold, soonest expiry first (lots
with no known expiry last), then oldest (received, else made) first. A pick of a lot while
a lot ahead of it lay in the same warehouse records a `fifo_broken` alert (migration 0027's
table) naming both, in the event's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud_collector import places
from protocols.strict import Strict

PICKED = ""  # the place of goods picked and not put anywhere yet

# bizStep -> (takes goods from where they are, where it puts them: "location" the event's
# bizLocation else readPoint, "destination" its bizLocation only, None nowhere).
MOVES: dict[str, tuple[bool, Literal["location", "destination"] | None]] = {
    "receiving": (False, "location"),
    "storing": (True, "location"),
    "picking": (True, "destination"),
    "shipping": (True, None),
    "consuming": (True, None),
    "producing": (False, "location"),
}
COUNTS = frozenset({"cycle_counting", "stock_taking"})
# The ObjectEvents that change stock (consuming and producing are a batch's: its
# TransformationEvent; an ObjectEvent of consumption outside a batch is flagged, not counted).
OBJECT_STEPS = frozenset({"receiving", "storing", "picking", "shipping"}) | COUNTS

# The event's places, canonical (places.py), in one round trip: where it happened, where it
# puts the goods, and its source location (a captured event's sourceList; null: none).
_PLACES = f"""
select {places.CANONICAL_OF.format("%(point)s")},
       {places.CANONICAL_OF.format("coalesce(%(location)s, %(point)s)")},
       {places.CANONICAL_OF.format("%(location)s")},
       (select {places.CANONICAL_OF.format("p.party")} from event_parties p
        where p.event_id = %(event)s and p.side = 'source' and p.type = 'location'
        order by p.position limit 1)
"""
_UNIT_PLACES = "select epc, place from units where epc = any(%s) and placed_at is not null"
# A lot's stock by place, the places where goods wait (docks, staging, lines: anything not
# a bin or a rack) before those where they are stored, each the latest reached first.
_STOCK = """
select s.place, s.quantity, coalesce(p.kind in ('bin', 'rack'), false) as stored
from place_stock s left join locations p on p.location_id = s.place
where s.lot_id = %s and s.uom = %s and s.quantity > 0 order by stored, s.since desc, s.place
"""
# One statement for all of an event's moves (a batch of 10,000 pallets: 20,000 rows).
_MOVES = """
insert into stock_moves (event_id, role, position, part, lot_id, unit, from_place, to_place,
    quantity, uom, time, biz_step, note)
select * from unnest(%s::text[], %s::text[], %s::int[], %s::int[], %s::bigint[], %s::text[],
    %s::text[], %s::text[], %s::float8[], %s::text[], %s::timestamptz[], %s::text[], %s::text[])
on conflict do nothing
"""
_COUNT = """
insert into stock_counts (event_id, lot_id, place, uom, counted, expected, difference, time,
    biz_step)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing
"""
# What a stock take finds missing: every lot held at the place itself, in each unit.
_HELD_AT = "select lot_id, uom, quantity from place_stock where place = %s and abs(quantity) > 1e-9"
FULL_COUNTS = frozenset({"stock_taking"})
# A late event never moves a unit back to where it was before a later one.
_PLACE_UNITS = """
update units set place = %(place)s, placed_at = %(time)s
where epc = any(%(units)s) and (placed_at is null or placed_at <= %(time)s)
"""
RECOUNT = "select recount_places(%s::bigint[])"
# A lot's place in FIFO: when it came (received, else made), else when we first heard of it.
ARRIVED = """coalesce((select min(r.time) from receipts r where r.lot_id = l.lot_id),
                   (select b.ended_at from batches b where b.batch_id = l.batch_id),
                   l.first_seen)"""
# The lots of a product with stock in a place and all inside it, in picking order.
_ADVICE = f"""
select l.lot_id, l.gtin, l.lot_code, l.expiry, {ARRIVED} as arrived, s.place, s.quantity,
       nullif(s.uom, '') as uom
from place_stock s join lots l using (lot_id)
where s.place in ({places.WITHIN}) and l.gtin = %(gtin)s and s.quantity > 0
  and not exists (select 1 from lot_holds h where h.lot_id = l.lot_id and h.released_at is null)
order by l.expiry nulls last, arrived, l.lot_id, s.place
limit %(limit)s
"""
_LOT = f"select l.gtin, l.lot_code, l.expiry, {ARRIVED} as arrived from lots l where lot_id = %s"
_ALERT = """
insert into alerts (kind, event_id, event_time, source_edge, read_point, biz_location,
    biz_step, documents, lots)
select 'fifo_broken', event_id, event_time, source_edge, read_point, biz_location, biz_step,
    biz_transactions, %s from trace_events where event_id = %s
on conflict (kind, event_id) where event_id is not null do nothing
"""
_LOT_STOCK = """
select s.place, p.name, p.kind, s.quantity, nullif(s.uom, '') as uom, s.since
from place_stock s left join locations p on p.location_id = s.place
where s.lot_id = %s order by s.place, s.uom
"""
_LOT_UNITS = """
select epc as unit, nullif(place, '') as place, placed_at from units
where lot_id = %s and placed_at is not null and place is not null order by epc limit 1000
"""
_PLACE_STOCK = f"""
select l.lot_id, l.gtin, l.lot_code, l.expiry, s.place, s.quantity, nullif(s.uom, '') as uom,
       s.since
from place_stock s join lots l using (lot_id)
where s.place in ({places.WITHIN}) order by s.place, l.gtin, l.lot_code limit %(limit)s
"""
_COUNTS = """
select c.event_id, c.place, c.counted, c.expected, c.difference, nullif(c.uom, '') as uom,
       c.time, c.biz_step
from stock_counts c where c.lot_id = %s order by c.time desc, c.event_id limit 100
"""
MAX_ADVICE = 50  # lots listed ahead of a broken pick in its alert, and in an advice


@dataclass(frozen=True)
class Line:
    """One item of an event as the stock sees it: a quantity of a lot, or a unit of it."""

    role: str  # observed, input, output (as event_items)
    position: int
    lot_id: int
    unit: str | None  # the unit's key (genealogy.unit_key) when the item is a unit
    quantity: float | None
    uom: str


@dataclass
class _Ledger:
    """The stock of the lots one event touches, as its earlier items left it."""

    conn: AsyncConnection
    stock: dict[tuple[int, str], list[list[Any]]] = field(default_factory=dict)
    units: dict[str, str | None] = field(default_factory=dict)  # unit -> its place

    async def load_units(self, lines: list[Line]) -> None:
        """Where the lines' units are: one query for a transformation of 10,000 pallets."""
        keys = [line.unit for line in lines if line.unit is not None]
        if keys:
            rows = await (await self.conn.execute(_UNIT_PLACES, (keys,))).fetchall()
            self.units = {epc: place for epc, place in rows}

    async def of(self, lot_id: int, uom: str) -> list[list[Any]]:
        if (lot_id, uom) not in self.stock:
            rows = await (await self.conn.execute(_STOCK, (lot_id, uom))).fetchall()
            self.stock[lot_id, uom] = [list(r) for r in rows]
        return self.stock[lot_id, uom]

    async def take(
        self, line: Line, read_point: str, source: str | None, to: str | None
    ) -> list[tuple[str | None, float | None, str | None]]:
        """(place, quantity, note) parts the line's goods are taken from."""
        if source is not None:
            await self.adjust(line, source, line.quantity, -1)
            return [(source, line.quantity, None)]
        if line.unit is not None and (place := self.units.get(line.unit)) is not None:
            await self.adjust(line, place, line.quantity, -1)
            return [(place, line.quantity, None)]
        held = await self.of(line.lot_id, line.uom)
        order = {read_point: 0, PICKED: 1}
        candidates = sorted(
            (r for r in held if r[1] > 0 and r[0] != to), key=lambda r: order.get(r[0], 2)
        )  # stable: as _STOCK orders them
        if line.quantity is None:
            place = candidates[0][0] if candidates else None
            note = None if place is not None else "no quantity, and no place holds the lot"
            return [(place, None, note)]
        parts: list[tuple[str | None, float | None, str | None]] = []
        left = line.quantity
        for row in candidates:
            if left <= 1e-9:
                break
            part = min(left, row[1])
            row[1] -= part
            left -= part
            parts.append((row[0], part, None))
        if left > 1e-9 or not parts:
            note = f"{left:g} {line.uom or '(no unit)'} not held at any known place"
            parts.append((None, left, note))
        return parts

    async def adjust(self, line: Line, place: str, quantity: float | None, sign: int) -> None:
        held = await self.of(line.lot_id, line.uom)
        row = next((r for r in held if r[0] == place), None)
        if row is None:
            row = [place, 0.0, False]
            held.append(row)
        row[1] += sign * (quantity or 0.0)

    async def at(self, lot_id: int, uom: str, place: str) -> float:
        return sum(r[1] for r in await self.of(lot_id, uom) if r[0] == place)


async def record(
    conn: AsyncConnection,
    *,
    event_id: str,
    time: datetime,
    step: str,
    read_point: str,
    biz_location: str | None,
    lines: list[Line],
    loose_units: list[str] | None = None,
) -> None:
    """Record what the event did to the stock of its lines' lots, and recount them;
    `loose_units`: units of no known lot, which only change place. The caller skips
    partners' events; a step that moves no goods records nothing."""
    if not (lines or loose_units) or (step not in MOVES and step not in COUNTS):
        return
    params = {"point": read_point, "location": biz_location, "event": event_id}
    row = await (await conn.execute(_PLACES, params)).fetchone()
    assert row is not None  # a select without from is one row
    point, here, destination, source = row
    ledger = _Ledger(conn)
    recount = {line.lot_id for line in lines}
    if step in COUNTS:
        recount |= await _count(ledger, event_id, time, step, here, lines)
        await _place_units(conn, loose_units or [], here, time)
    else:
        takes, puts = MOVES[step]
        to: str | None = None
        if puts == "location":
            to = here
        elif puts == "destination":
            to = destination if biz_location else PICKED
        if step == "picking":
            await _check_fifo(ledger, event_id, lines, point, source)
        await _move(ledger, event_id, time, step, lines, takes, to, point, source)
        await _place_units(conn, loose_units or [], to, time)
    if recount:
        await conn.execute(RECOUNT, (sorted(recount),))


async def _move(
    ledger: _Ledger,
    event_id: str,
    time: datetime,
    step: str,
    lines: list[Line],
    takes: bool,
    to: str | None,
    point: str,
    source: str | None,
) -> None:
    if takes:
        await ledger.load_units(lines)
    rows = []
    for line in lines:
        parts: list[tuple[str | None, float | None, str | None]] = [(None, line.quantity, None)]
        if takes:
            parts = await ledger.take(line, point, source, to)
        if to is not None:
            await ledger.adjust(line, to, line.quantity, +1)
        for part, (place, quantity, note) in enumerate(parts):
            rows.append(
                (event_id, line.role, line.position, part, line.lot_id, line.unit, place, to,
                 quantity, line.uom, time, step, note)
            )  # fmt: skip
    if rows:
        columns = [list(column) for column in zip(*rows, strict=True)]
        await ledger.conn.execute(_MOVES, columns)
    await _place_units(ledger.conn, [x.unit for x in lines if x.unit is not None], to, time)


async def _place_units(
    conn: AsyncConnection, units: list[str], place: str | None, time: datetime
) -> None:
    if units:
        await conn.execute(_PLACE_UNITS, {"place": place, "time": time, "units": units})


async def _count(
    ledger: _Ledger, event_id: str, time: datetime, step: str, place: str, lines: list[Line]
) -> set[int]:
    """A count sets each counted lot's quantity at the place (items of a lot summed, in
    each unit of measure); items without a quantity count as none of the lot there. A stock
    take also counts none of each lot the place held that it does not name. Returns those
    lots (their stock changes too)."""
    counted: dict[tuple[int, str], float] = {}
    for line in lines:
        key = (line.lot_id, line.uom)
        counted[key] = counted.get(key, 0.0) + (line.quantity or 0.0)
    rows = []
    for (lot_id, uom), quantity in counted.items():
        expected = await ledger.at(lot_id, uom, place)
        rows.append(
            (event_id, lot_id, place, uom, quantity, expected, quantity - expected, time, step)
        )
    missing: set[int] = set()
    if step in FULL_COUNTS:
        held = await (await ledger.conn.execute(_HELD_AT, (place,))).fetchall()
        for lot_id, uom, expected in held:
            if (lot_id, uom) not in counted:
                missing.add(lot_id)
                rows.append((event_id, lot_id, place, uom, 0.0, expected, -expected, time, step))
    async with ledger.conn.cursor() as cur:
        await cur.executemany(_COUNT, rows)
    await _place_units(ledger.conn, [x.unit for x in lines if x.unit is not None], place, time)
    return missing


class Advice(Strict):
    lot_id: int
    gtin: str
    lot_code: str
    expiry: date | None
    arrived: datetime
    place: str
    quantity: float
    uom: str | None


def _rank(expiry: date | None, arrived: datetime) -> tuple[bool, date, datetime]:
    return (expiry is None, expiry or date.max, arrived)


async def advice(
    conn: AsyncConnection, place: str, gtin: str, limit: int = MAX_ADVICE
) -> list[Advice]:
    """The lots of a product to pick at a place (and all inside it), best first."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"place": await places.canonical(conn, place), "gtin": gtin, "limit": limit}
    rows = await (await cur.execute(_ADVICE, params)).fetchall()
    return [Advice(**r) for r in rows]


async def _check_fifo(
    ledger: _Ledger, event_id: str, lines: list[Line], point: str, source: str | None
) -> None:
    """A `fifo_broken` alert when a picked lot had a lot of its product ahead of it in the
    warehouse it was picked in (judged before the pick moves anything)."""
    conn = ledger.conn
    warehouse = await places.scope(conn, source or point)
    broken: list[dict[str, Any]] = []
    for lot_id in dict.fromkeys(line.lot_id for line in lines):
        row = await (await conn.execute(_LOT, (lot_id,))).fetchone()
        if row is None or not row[0]:
            continue  # a lot of no known product has no rivals
        gtin, lot_code, expiry, arrived = row
        ahead = [
            a
            for a in await advice(conn, warehouse, gtin)
            if a.lot_id != lot_id and _rank(a.expiry, a.arrived) < _rank(expiry, arrived)
        ]
        if ahead:
            rule = "FEFO" if ahead[0].expiry is not None else "FIFO"
            broken.append(
                {
                    "lot_id": lot_id, "gtin": gtin, "lot_code": lot_code,
                    "expiry": expiry.isoformat() if expiry else None,
                    "arrived": arrived.isoformat(), "rule": rule, "warehouse": warehouse,
                    "pick_first": [a.model_dump(mode="json") for a in ahead],
                }
            )  # fmt: skip
    if broken:
        await conn.execute(_ALERT, (Jsonb(broken), event_id))


class PlaceQuantity(Strict):
    place: str | None  # None: picked, not put anywhere yet
    name: str | None
    kind: str | None
    quantity: float
    uom: str | None
    since: datetime


class UnitPlace(Strict):
    unit: str
    place: str | None
    placed_at: datetime


class Count(Strict):
    event_id: str
    place: str
    counted: float
    expected: float
    difference: float
    uom: str | None
    time: datetime
    biz_step: str


class LotStock(Strict):
    places: list[PlaceQuantity]
    units: list[UnitPlace]  # its serialized units with a known place (at most 1,000)
    counts: list[Count]  # the latest 100 counts of it


async def lot_stock(conn: AsyncConnection, lot_id: int) -> LotStock:
    cur = conn.cursor(row_factory=dict_row)
    found = await (await cur.execute(_LOT_STOCK, (lot_id,))).fetchall()
    units = await (await cur.execute(_LOT_UNITS, (lot_id,))).fetchall()
    counts = await (await cur.execute(_COUNTS, (lot_id,))).fetchall()
    return LotStock(
        places=[PlaceQuantity(**{**r, "place": r["place"] or None}) for r in found],
        units=[UnitPlace(**u) for u in units],
        counts=[Count(**c) for c in counts],
    )


class StockLine(Strict):
    lot_id: int
    gtin: str
    lot_code: str
    expiry: date | None
    place: str
    quantity: float
    uom: str | None
    since: datetime


async def place_stock(conn: AsyncConnection, place: str, limit: int = 10_000) -> list[StockLine]:
    """What lies at a place and everything inside it, per lot and place."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"place": await places.canonical(conn, place), "limit": limit}
    rows = await (await cur.execute(_PLACE_STOCK, params)).fetchall()
    return [StockLine(**r) for r in rows]
