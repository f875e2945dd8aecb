"""Projects trace events into the lot genealogy, in the transaction that stores the event.

A TransformationEvent is a batch node between lots: how much of each input lot it consumed
(batch_inputs: the sum of its consumed items, per unit of measure) and how much of each
output lot it made (batch_outputs); the trace walk's edges (lot_links, input lot -> output
lot) are derived from the two in the database, never as inputs x outputs in Python.
Receiving records where a lot or unit came from; shipping records where it went. Units
(SSCC, SGTIN) are resolved to their lots when a label or an earlier event said which lot
they hold; a unit nobody tied to a lot becomes a placeholder lot of its own, which trace
answers then report as a lot with no recorded origin.

Every quantity is the sum of the records that made it: after each event the lots it
touched are recounted from their whole history (the database function recount_lots,
migration 0018): a lot's quantity is what made it or else what received it, in one unit of
measure or not added at all (lots.quantity_note says why); its shipped and consumed
quantities are the sums of its shipment lines and batch inputs in that unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import AsyncConnection

from cloud_collector import stock
from protocols.mqtt.contract import (
    MAX_LOT_LINKS,
    Item,
    ObjectEventRecord,
    TransformationEventRecord,
)

# A lot's quantity is not the first label's: recount_lots sums its history.
_UPSERT_LOT = """
insert into lots (gtin, lot_code, origin, batch_id)
values (%(gtin)s, %(lot)s, %(origin)s, %(batch)s)
on conflict (gtin, lot_code) do update set
    origin = case when lots.origin = 'unknown' then excluded.origin else lots.origin end,
    batch_id = coalesce(lots.batch_id, excluded.batch_id)
returning lot_id
"""
_UNIT_LOT = "select lot_id from units where epc = %s or (sscc is not null and sscc = %s)"
_UPSERT_UNIT = """
insert into units (epc, sscc, gtin, serial, lot_id) values (%s, %s, %s, %s, %s)
on conflict (epc) do update set lot_id = coalesce(excluded.lot_id, units.lot_id)
"""
# A partner's label never moves a unit into another lot: it only names units new to us.
_NEW_UNIT = """
insert into units (epc, sscc, gtin, serial, lot_id) values (%s, %s, %s, %s, %s)
on conflict (epc) do nothing
"""
_BATCH_LOT = """
insert into {table} (event_id, batch_id, lot_id, uom, quantity, items, unquantified)
values (%s, %s, %s, %s, %s, %s, %s) on conflict do nothing
"""
_CONSUMED = _BATCH_LOT.format(table="batch_inputs")
_PRODUCED = _BATCH_LOT.format(table="batch_outputs")
# The walk's edges of one event, set-based from its two sides.
_LINKS = """
insert into lot_links (input_lot, output_lot, batch_id, event_id)
select i.lot_id, o.lot_id, i.batch_id, i.event_id
from (select distinct lot_id, batch_id, event_id from batch_inputs where event_id = %(event)s) i
join (select distinct lot_id, event_id from batch_outputs where event_id = %(event)s) o
    using (event_id)
on conflict do nothing
"""
# What a unit consumed without a quantity held: what its receipt said it held.
_UNIT_RECEIVED = """
select quantity, uom from receipts where epc = %s and quantity is not null
order by time desc limit 1
"""
# Quantities and last place of the lots, from their history (migrations 0018, 0019).
RECOUNT = "select recount_lots(%s::bigint[])"
RECOUNT_ALL = "select recount_lots(array(select lot_id from lots))"
# At most this many (input lot, output lot) edges per transformation: a batch of 300 lots
# blended into 300 lots stays well inside; 10,000 distinct input lots x 10,000 distinct
# output lots would be 10^8 rows. The contract bounds its records by the same number
# (counting items); this counts distinct lots, for captured EPCIS events too.
MAX_LOT_PAIRS = MAX_LOT_LINKS
_RECEIPT = """
insert into receipts (event_id, position, lot_id, epc, document, quantity, uom, time, location)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing
"""
_SHIPMENT_LINE = """
insert into shipment_lines (event_id, position, lot_id, epc, shipment, quantity, uom, time,
    location)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing
"""
_EXPIRY = "update lots set expiry = %s where lot_id = %s and expiry is null"
_LOCATION = """
insert into lot_locations (lot_id, epc, location, time, event_id) values (%s, %s, %s, %s, %s)
"""


# Batch ids of partners' captured transformations (epcis/genealogy_feed.py) start with it.
PARTNER_BATCHES = "partner:"


class ReservedBatchId(ValueError):
    """A batch id of our own in the partners' namespace: it would pass for a partner's."""


class TransformationTooWide(ValueError):
    """A transformation names more distinct input lots x output lots than MAX_LOT_PAIRS."""


async def _lot(
    conn: AsyncConnection, gtin: str, lot: str, origin: str, batch: str | None = None
) -> int:
    params = {"gtin": gtin, "lot": lot, "origin": origin, "batch": batch}
    row = await (await conn.execute(_UPSERT_LOT, params)).fetchone()
    assert row is not None  # an upsert with returning always yields the row
    return int(row[0])


def unit_key(item: Item) -> str | None:
    """One key per physical unit whichever way it was captured: a pallet read by its RFID
    tag (urn:epc:id:sscc:...) and scanned by its label (00 + SSCC) is the same unit."""
    if item.sscc:
        return f"sscc:{item.sscc}"
    if item.gtin and item.serial:
        return f"sgtin:{item.gtin}.{item.serial}"
    return item.epc


# Receipts, shipment lines and places recorded of units before a label said their lot.
_UNITS_LEARNT_THEIR_LOTS = [
    f"""update {table} x set lot_id = u.lot_id from units u
        where u.epc = any(%s) and u.lot_id is not null and x.epc = u.epc and x.lot_id is null"""
    for table in ("receipts", "shipment_lines", "lot_locations")
]
_RECEIVED_IS_SUPPLIED = """
update lots l set origin = 'supplier' where l.lot_id = any(%s) and l.origin = 'unknown'
    and exists (select 1 from receipts r where r.lot_id = l.lot_id)
"""


@dataclass
class _Projection:
    """What projecting one event learns on the way, applied set-based when it is done: a
    lot is upserted once however many of its units the event names, and what labels taught
    (units tied to lots) reaches earlier records in three statements, not three per unit."""

    conn: AsyncConnection
    partner: str | None = None  # a partner's labels never re-tie our units
    lots: dict[tuple[str, str], int] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)  # lots to recount
    labelled: list[str] = field(default_factory=list)  # units a label tied to their lot
    labelled_lots: set[int] = field(default_factory=set)

    async def lot(self, gtin: str, lot: str, origin: str, batch: str | None = None) -> int:
        if (gtin, lot) not in self.lots:
            self.lots[gtin, lot] = await _lot(self.conn, gtin, lot, origin, batch)
        return self.lots[gtin, lot]

    async def unit(self, item: Item, lot_id: int | None) -> None:
        key = unit_key(item)
        if key is not None:
            statement = _UPSERT_UNIT if self.partner is None else _NEW_UNIT
            await self.conn.execute(statement, (key, item.sscc, item.gtin, item.serial, lot_id))

    async def finish(self) -> None:
        if self.labelled:
            for statement in _UNITS_LEARNT_THEIR_LOTS:
                await self.conn.execute(statement, (self.labelled,))  # type: ignore[arg-type]
            await self.conn.execute(_RECEIVED_IS_SUPPLIED, (sorted(self.labelled_lots),))
        if self.touched:
            await self.conn.execute(RECOUNT, (sorted(self.touched),))


async def lot_of(p: _Projection, item: Item, origin: str = "unknown") -> int | None:
    """The lot an item is or belongs to; None for a unit no one has tied to a lot yet.

    A label that names both a unit and its lot (SSCC + GTIN + lot) ties them together for
    good, also backwards: a pallet received by its RFID tag alone gets its lot once its
    label is scanned at the line. A partner's label ties only units new to us."""
    if item.lot is not None and (item.gtin is not None or item.epc_class is not None):
        lot_id = await p.lot(item.gtin or "", item.lot, origin)
        if (unit := unit_key(item)) is not None:
            await p.unit(item, lot_id)
            if p.partner is None:
                p.labelled.append(unit)
                p.labelled_lots.add(lot_id)
                p.touched.add(lot_id)
        return lot_id
    if item.lot is not None and item.epc is None and item.sscc is None:
        return await p.lot(item.gtin or "", item.lot, origin)
    key = unit_key(item)
    if key is None:
        return None
    row = await (await p.conn.execute(_UNIT_LOT, (key, item.sscc))).fetchone()
    return int(row[0]) if row and row[0] is not None else None


@dataclass
class _Tally:
    """What one side of a batch holds of one lot in one unit of measure."""

    quantity: float | None = None
    items: int = 0
    unquantified: int = 0

    def add(self, quantity: float | None) -> None:
        self.items += 1
        if quantity is None:
            self.unquantified += 1
        else:
            self.quantity = (self.quantity or 0.0) + quantity


Tallies = dict[tuple[int, str], _Tally]


def _count(tallies: Tallies, lot_id: int, quantity: float | None, uom: str | None) -> None:
    tallies.setdefault((lot_id, uom or ""), _Tally()).add(quantity)


def _too_wide(event: TransformationEventRecord, inputs: int, outputs: int) -> None:
    if inputs * outputs > MAX_LOT_PAIRS:
        raise TransformationTooWide(
            f"transformation {event.event_id!r} of batch {event.batch!r} names {inputs:,} "
            f"input lots x {outputs:,} output lots = {inputs * outputs:,} lot pairs, more "
            f"than the {MAX_LOT_PAIRS:,} one transformation may link: record it as several "
            "transformations (one per output lot or per group of inputs)"
        )


def _named_lots(items: list[Item]) -> int:
    """How many distinct lots the items name by lot code: at least that many they hold."""
    return len({(i.gtin or "", i.lot) for i in items if i.lot is not None}) or 1


_BATCH = """
insert into batches (batch_id, line_id, edge_id, started_at, ended_at)
values (%s, %s, %s, %s, %s)
on conflict (batch_id) do update set
    started_at = coalesce(batches.started_at, excluded.started_at),
    ended_at = coalesce(batches.ended_at, excluded.ended_at)
"""


async def project_transformation(
    conn: AsyncConnection,
    event: TransformationEventRecord,
    edge_id: str,
    *,
    partner: str | None = None,
) -> None:
    """The batch node of `event`; `partner`: the capturing partner, whose labels never
    re-tie our units (its batch ids are namespaced by the caller, epcis/genealogy_feed.py)."""
    batch = event.batch
    if partner is None and batch.startswith(PARTNER_BATCHES):
        raise ReservedBatchId(
            f"batch id {batch!r} of transformation {event.event_id!r} starts with "
            f"{PARTNER_BATCHES!r}, the namespace of partners' batches: name it otherwise"
        )
    # Refused before any statement when the lot codes alone say it (units may add lots).
    _too_wide(event, _named_lots(event.inputs), _named_lots(event.outputs))
    # A partner's transformation (EPCIS capture) may be the first word of this batch.
    await conn.execute(_BATCH, (batch, event.line, edge_id, event.started_at, event.time))
    p = _Projection(conn, partner)
    produced: Tallies = {}
    unit_outputs: list[tuple[int, Item]] = []
    made: list[stock.Line] = []
    used: list[stock.Line] = []
    for position, item in enumerate(event.outputs):
        if item.lot is not None:
            lot_id = await p.lot(item.gtin or "", item.lot, "own", batch)
            await p.unit(item, lot_id)
            _count(produced, lot_id, item.quantity, item.uom)
            made.append(await _stock_line(p, "output", position, item, lot_id, received=False))
        else:
            unit_outputs.append((position, item))
    if unit_outputs:
        # Units without a lot (pallet labels) hold the batch's first lot, or its own lot.
        first = next(iter(produced), None)
        lot_id = first[0] if first else await p.lot("", batch, "own", batch)
        for position, item in unit_outputs:
            await p.unit(item, lot_id)
            _count(produced, lot_id, item.quantity, item.uom)
            made.append(await _stock_line(p, "output", position, item, lot_id, received=False))
    if not produced:
        # Nothing recorded as made: the batch's own lot stands for its output.
        produced[(await p.lot("", batch, "own", batch), "")] = _Tally()
    consumed: Tallies = {}
    for position, item in enumerate(event.inputs):
        known = await lot_of(p, item)
        if known is None:
            # A unit consumed that no event tied to a lot: it stands for a lot of its own.
            known = await p.lot("", f"unit:{unit_key(item) or item.raw}", "unknown")
            await p.unit(item, known)
        quantity, uom = item.quantity, item.uom
        if quantity is None and (unit := unit_key(item)) is not None:
            received = await (await conn.execute(_UNIT_RECEIVED, (unit,))).fetchone()
            if received is not None:
                quantity, uom = received
        _count(consumed, known, quantity, uom)
        used.append(stock.Line("input", position, known, unit_key(item), quantity, uom or ""))
    _too_wide(event, len({lot for lot, _ in consumed}), len({lot for lot, _ in produced}))
    for statement, tallies in ((_CONSUMED, consumed), (_PRODUCED, produced)):
        rows = [
            (event.event_id, batch, lot, uom, t.quantity, t.items, t.unquantified)
            for (lot, uom), t in tallies.items()
        ]
        async with conn.cursor() as cur:
            await cur.executemany(statement, rows)
    await conn.execute(_LINKS, {"event": event.event_id})
    p.touched |= {lot for lot, _ in consumed} | {lot for lot, _ in produced}
    await p.finish()
    if partner is None:  # a partner's batch never moves our stock
        for step, lines in (("consuming", used), ("producing", made)):
            await stock.record(
                conn, event_id=event.event_id, time=event.time, step=step,
                read_point=event.read_point, biz_location=None, lines=lines,
            )  # fmt: skip


async def project_object_event(
    conn: AsyncConnection, event: ObjectEventRecord, *, partner: str | None = None
) -> None:
    """A receipt or shipment line per item, and what it moved of each lot's stock per place
    (put-away, moves, picks, counts: stock.py); `partner`: the capturing partner (its labels
    never re-tie our units; its events never count in our stock: recount_lots)."""
    stocked = partner is None and event.biz_step in stock.OBJECT_STEPS
    if event.biz_step not in ("receiving", "shipping") and not stocked:
        return  # consumption or output outside a batch: flagged at the edge, no link
    document = event.biz_transactions[0].id if event.biz_transactions else None
    location = event.biz_location or event.read_point
    receiving = event.biz_step == "receiving"
    moving = event.biz_step not in ("receiving", "shipping")
    p = _Projection(conn, partner)
    lines: list[stock.Line] = []
    loose: list[str] = []  # units of no known lot: they change place, no lot's stock
    for position, item in enumerate(event.items):
        origin = "supplier" if receiving and partner is None else "unknown"
        lot_id = await lot_of(p, item, origin)
        if receiving or (moving and lot_id is None):
            await p.unit(item, lot_id)  # a unit put away before a label named its lot
        row = (
            event.event_id,
            position,
            lot_id,
            unit_key(item),
            document,
            item.quantity,
            item.uom,
            event.time,
            location,
        )
        if not moving:
            await conn.execute(_RECEIPT if receiving else _SHIPMENT_LINE, row)
        await conn.execute(
            _LOCATION, (lot_id, unit_key(item), location, event.time, event.event_id)
        )
        if lot_id is not None:
            p.touched.add(lot_id)
            if stocked:
                lines.append(await _stock_line(p, "observed", position, item, lot_id))
        elif (unit := unit_key(item)) is not None:
            loose.append(unit)
    await p.finish()
    if stocked:
        await stock.record(
            conn,
            event_id=event.event_id,
            time=event.time,
            step=event.biz_step,
            read_point=event.read_point,
            biz_location=event.biz_location,
            lines=lines,
            loose_units=loose,
        )


async def _stock_line(
    p: _Projection, role: str, position: int, item: Item, lot_id: int, *, received: bool = True
) -> stock.Line:
    """The item as the stock counts it: a unit without a quantity holds what its receipt
    said (`received`: it may have one); a label's expiry date is the lot's (the first said
    is kept)."""
    if item.expiry is not None and p.partner is None:
        await p.conn.execute(_EXPIRY, (item.expiry, lot_id))
    quantity, uom, unit = item.quantity, item.uom, unit_key(item)
    if quantity is None and unit is not None and received and p.partner is None:
        held = await (await p.conn.execute(_UNIT_RECEIVED, (unit,))).fetchone()
        if held is not None:
            quantity, uom = held
    return stock.Line(role, position, lot_id, unit, quantity, uom or "")
