"""Projects trace events into the lot genealogy, in the transaction that stores the event.

A TransformationEvent links each input lot to each output lot of its batch; receiving
records where a lot or unit came from; shipping records where it went. Units (SSCC, SGTIN)
are resolved to their lots when a label or an earlier event said which lot they hold;
a unit nobody tied to a lot becomes a placeholder lot of its own, which trace answers then
report as a lot with no recorded origin.
"""

from __future__ import annotations

from psycopg import AsyncConnection

from protocols.mqtt.contract import Item, ObjectEventRecord, TransformationEventRecord

_UPSERT_LOT = """
insert into lots (gtin, lot_code, quantity, uom, origin, batch_id)
values (%(gtin)s, %(lot)s, %(quantity)s, %(uom)s, %(origin)s, %(batch)s)
on conflict (gtin, lot_code) do update set
    origin = case when lots.origin = 'unknown' then excluded.origin else lots.origin end,
    batch_id = coalesce(lots.batch_id, excluded.batch_id),
    quantity = coalesce(lots.quantity, excluded.quantity),
    uom = coalesce(lots.uom, excluded.uom)
returning lot_id
"""
_UNIT_LOT = "select lot_id from units where epc = %s or (sscc is not null and sscc = %s)"
_UPSERT_UNIT = """
insert into units (epc, sscc, gtin, serial, lot_id) values (%s, %s, %s, %s, %s)
on conflict (epc) do update set lot_id = coalesce(excluded.lot_id, units.lot_id)
"""
_LINK = """
insert into lot_links (input_lot, output_lot, batch_id, event_id, quantity, uom)
values (%s, %s, %s, %s, %s, %s) on conflict do nothing
"""
_RECEIPT = """
insert into receipts (event_id, position, lot_id, epc, document, quantity, uom, time, location)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing
"""
_SHIPMENT_LINE = """
insert into shipment_lines (event_id, position, lot_id, epc, shipment, quantity, uom, time,
    location)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing
"""
_LOCATION = """
insert into lot_locations (lot_id, epc, location, time, event_id) values (%s, %s, %s, %s, %s)
"""
# The lot's last place, from its history (an event may arrive late, or a unit learn its lot).
_RELOCATE = """
update lots l set location = x.location, located_at = x.time
from (select location, time from lot_locations where lot_id = %(lot)s
      order by time desc limit 1) x
where l.lot_id = %(lot)s and l.located_at is distinct from x.time
"""
# How much of the lot went out, from its shipment lines (a resend adds no line).
_RESHIP = """
update lots set shipped_quantity = (
    select sum(quantity) from shipment_lines where lot_id = %(lot)s)
where lot_id = %(lot)s
"""
# The same for every lot at once (a database loaded in bulk).
RELOCATE_ALL = """
update lots l set location = x.location, located_at = x.time
from (select distinct on (lot_id) lot_id, location, time from lot_locations
      where lot_id is not null order by lot_id, time desc) x
where x.lot_id = l.lot_id
"""
RESHIP_ALL = """
update lots l set shipped_quantity = s.quantity
from (select lot_id, sum(quantity) as quantity from shipment_lines
      where lot_id is not null group by lot_id) s
where s.lot_id = l.lot_id
"""


async def _lot(
    conn: AsyncConnection,
    gtin: str,
    lot: str,
    item: Item | None,
    origin: str,
    batch: str | None = None,
) -> int:
    params = {
        "gtin": gtin,
        "lot": lot,
        "origin": origin,
        "batch": batch,
        "quantity": item.quantity if item else None,
        "uom": item.uom if item else None,
    }
    row = await (await conn.execute(_UPSERT_LOT, params)).fetchone()
    assert row is not None  # an upsert with returning always yields the row
    return int(row[0])


def _unit_key(item: Item) -> str | None:
    """One key per physical unit whichever way it was captured: a pallet read by its RFID
    tag (urn:epc:id:sscc:...) and scanned by its label (00 + SSCC) is the same unit."""
    if item.sscc:
        return f"sscc:{item.sscc}"
    if item.gtin and item.serial:
        return f"sgtin:{item.gtin}.{item.serial}"
    return item.epc


_UNIT_LEARNT_ITS_LOT = [
    f"update {table} set lot_id = %(lot)s where epc = %(unit)s and lot_id is null"
    for table in ("receipts", "shipment_lines", "lot_locations")
]


_RECEIVED_IS_SUPPLIED = """
update lots set origin = 'supplier' where lot_id = %(lot)s and origin = 'unknown'
    and exists (select 1 from receipts where lot_id = %(lot)s)
"""


async def lot_of(conn: AsyncConnection, item: Item, origin: str = "unknown") -> int | None:
    """The lot an item is or belongs to; None for a unit no one has tied to a lot yet.

    A label that names both a unit and its lot (SSCC + GTIN + lot) ties them together for
    good, also backwards: a pallet received by its RFID tag alone gets its lot once its
    label is scanned at the line."""
    if item.lot is not None and (item.gtin is not None or item.epc_class is not None):
        lot_id = await _lot(conn, item.gtin or "", item.lot, item, origin)
        if (unit := _unit_key(item)) is not None:
            await _unit(conn, item, lot_id)
            for statement in _UNIT_LEARNT_ITS_LOT:
                await conn.execute(statement, {"lot": lot_id, "unit": unit})
            await conn.execute(_RELOCATE, {"lot": lot_id})
            await conn.execute(_RESHIP, {"lot": lot_id})
            await conn.execute(_RECEIVED_IS_SUPPLIED, {"lot": lot_id})
        return lot_id
    if item.lot is not None and item.epc is None and item.sscc is None:
        return await _lot(conn, item.gtin or "", item.lot, item, origin)
    key = _unit_key(item)
    if key is None:
        return None
    row = await (await conn.execute(_UNIT_LOT, (key, item.sscc))).fetchone()
    return int(row[0]) if row and row[0] is not None else None


async def _unit(conn: AsyncConnection, item: Item, lot_id: int | None) -> None:
    key = _unit_key(item)
    if key is not None:
        await conn.execute(_UPSERT_UNIT, (key, item.sscc, item.gtin, item.serial, lot_id))


_BATCH = """
insert into batches (batch_id, line_id, edge_id, started_at, ended_at)
values (%s, %s, %s, %s, %s)
on conflict (batch_id) do update set
    started_at = coalesce(batches.started_at, excluded.started_at),
    ended_at = coalesce(batches.ended_at, excluded.ended_at)
"""


async def project_transformation(
    conn: AsyncConnection, event: TransformationEventRecord, edge_id: str
) -> None:
    batch = event.batch
    # A partner's transformation (EPCIS capture) may be the first word of this batch.
    await conn.execute(_BATCH, (batch, event.line, edge_id, event.started_at, event.time))
    outputs: list[int] = []
    unit_outputs: list[Item] = []
    for item in event.outputs:
        if item.lot is not None:
            outputs.append(await _lot(conn, item.gtin or "", item.lot, item, "own", batch))
        else:
            unit_outputs.append(item)
    if not outputs:
        # Only units (pallet labels) came out: they hold the batch's own lot.
        outputs.append(await _lot(conn, "", batch, None, "own", batch))
    for item in unit_outputs:
        await _unit(conn, item, outputs[0])
    links = []
    for item in event.inputs:
        lot_id = await lot_of(conn, item)
        if lot_id is None:
            # A unit consumed that no event tied to a lot: it stands for a lot of its own.
            lot_id = await _lot(conn, "", f"unit:{_unit_key(item) or item.raw}", None, "unknown")
            await _unit(conn, item, lot_id)
        links += [(lot_id, out, batch, event.event_id, item.quantity, item.uom) for out in outputs]
    async with conn.cursor() as cur:
        await cur.executemany(_LINK, links)


async def project_object_event(conn: AsyncConnection, event: ObjectEventRecord) -> None:
    if event.biz_step not in ("receiving", "shipping"):
        return  # consumption or output outside a batch: flagged at the edge, no link
    document = event.biz_transactions[0].id if event.biz_transactions else None
    location = event.biz_location or event.read_point
    receiving = event.biz_step == "receiving"
    for position, item in enumerate(event.items):
        lot_id = await lot_of(conn, item, origin="supplier" if receiving else "unknown")
        if receiving:
            await _unit(conn, item, lot_id)
        row = (
            event.event_id,
            position,
            lot_id,
            _unit_key(item),
            document,
            item.quantity,
            item.uom,
            event.time,
            location,
        )
        await conn.execute(_RECEIPT if receiving else _SHIPMENT_LINE, row)
        await conn.execute(
            _LOCATION, (lot_id, _unit_key(item), location, event.time, event.event_id)
        )
        if lot_id is not None:
            await conn.execute(_RELOCATE, {"lot": lot_id})
            if not receiving:
                await conn.execute(_RESHIP, {"lot": lot_id})
