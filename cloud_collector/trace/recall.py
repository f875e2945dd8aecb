"""The recall: every lot the given lot reached, and where each is now (the recall list,
which the recall by condition gives too), summed per place."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from cloud_collector.trace.gaps import find_gaps
from cloud_collector.trace.models import Lot, PlaceStock, Recall, RecallLine
from cloud_collector.trace.rows import fetch_named
from cloud_collector.trace.walk import CUSTOMER, Reached, by_customer, reached_table

_COUNT = "select count(*) from reached"
# The batches that made lots of the traced set out of lots of the set.
_BATCHES_BETWEEN = """
select distinct k.batch_id from lot_links k
join reached o on o.lot_id = k.output_lot join reached i on i.lot_id = k.input_lot
"""

# Where a lot's stock lies by place (bin), when the warehouse events said (place_stock,
# cloud_collector/stock.py): one on-hand line per place, and a line without a place for what
# the lot has left beyond them (stock from before its first warehouse event, or what a count
# did not find); a lot no warehouse event placed keeps the one line at its last place, and
# so does one whose places hold more than it has left (a late event took goods from no
# known place): the lot's own count is right whatever the order of its events.
BY_PLACE = """
left join (select lot_id, uom, sum(quantity) as placed from place_stock where quantity > 0
           group by lot_id, uom) b on b.lot_id = l.lot_id and b.uom = coalesce(l.uom, '')
    and (l.quantity is null or b.placed <= l.quantity - coalesce(l.shipped_quantity, 0)
         - coalesce(l.consumed_quantity, 0) + 1e-6)
"""
# The recall list over the reached lots (the table `reached`): every shipment line
# of a lot, and what is left of each lot not shipped or used in full and where it was last
# seen (a lot of unknown quantity is listed as 'unknown', with its last place: a recall
# errs on the side of stock that may still be there). What is left is what made or
# received the lot less what was shipped and what batches used of it (in its unit of
# measure), all kept on the lot at ingest: at 500,000 lots every extra pass or probe per
# lot costs a few hundred milliseconds. Each line says whether its lot is on hold now, in
# RecallLine's column order (the recall CSV is this statement's COPY).
# Who got the goods: the ERP's customer, else the destination party of the shipping
# event (walk.CUSTOMER).
RECALL_LINES = f"""
select l.lot_id, l.gtin, l.lot_code, 'shipped' as status, s.location,
       coalesce(m.customer_id, dst.party_id) as customer_id, coalesce(c.name, dst.name) as customer,
       m.order_id, s.shipment, s.quantity, s.uom, s.epc,
       h.hold_id is not null as held, h.reason as hold_reason, h.held_at as held_since
from reached join shipment_lines s using (lot_id) join lots l using (lot_id)
left join shipments m using (shipment) left join customers c using (customer_id) {CUSTOMER}
left join lot_holds h on h.lot_id = l.lot_id and h.released_at is null
union all
select l.lot_id, l.gtin, l.lot_code,
       case when l.quantity is not null then 'on_hand' else 'unknown' end,
       case when b.placed is null then l.location end, null, null, null, null,
       l.quantity - coalesce(l.shipped_quantity, 0) - coalesce(l.consumed_quantity, 0)
           - coalesce(b.placed, 0),
       l.uom, null,
       h.hold_id is not null, h.reason, h.held_at
from reached join lots l using (lot_id)
left join lot_holds h on h.lot_id = l.lot_id and h.released_at is null
{BY_PLACE}
where (b.placed is null and (l.quantity is null
       or l.quantity - coalesce(l.shipped_quantity, 0) - coalesce(l.consumed_quantity, 0) > 0))
   or l.quantity - coalesce(l.shipped_quantity, 0) - coalesce(l.consumed_quantity, 0)
      - b.placed > 1e-9
union all
select l.lot_id, l.gtin, l.lot_code, 'on_hand', nullif(p.place, ''), null, null, null, null,
       p.quantity, nullif(p.uom, ''), null,
       h.hold_id is not null, h.reason, h.held_at
from reached join place_stock p using (lot_id) join lots l using (lot_id)
left join lot_holds h on h.lot_id = l.lot_id and h.released_at is null
{BY_PLACE}
where p.quantity > 0 and b.placed is not null and p.uom = b.uom
"""


async def recall(conn: AsyncConnection, lot: Lot) -> Recall:
    """Every lot the given lot reached, and where each is now: shipped (to whom, on which
    order, how much) or on hand (where, how much is left), and the gaps met on the way."""
    async with reached_table(conn, lot.lot_id, "forward") as reached:
        if reached.ids is not None:
            affected = len(reached.ids)
        else:
            row = await (await conn.execute(_COUNT)).fetchone()
            affected = row[0] if row else 0
        lines = await recall_lines(conn, reached)
        between = await fetch_named(conn, reached.sql(_BATCHES_BETWEEN), reached.params)
        batch_ids = [r["batch_id"] for r in between]
        gaps = await find_gaps(conn, lot, reached.ids, batch_ids, "forward")
    return Recall(
        lot=lot,
        affected_lots=affected,
        lines=lines,
        on_hand=on_hand_by_place(lines),
        customers=by_customer([x for x in lines if x.status == "shipped"]),
        gaps=gaps,
    )


async def recall_lines(conn: AsyncConnection, reached: Reached) -> list[RecallLine]:
    """The recall list of the reached lots (RECALL_LINES): each lot's shipments, then its
    remainder, the same order every time."""
    rows = await fetch_named(conn, reached.sql(RECALL_LINES), reached.params)
    rows.sort(
        key=lambda r: (
            r["lot_id"],
            r["status"] != "shipped",
            r["shipment"] or "",
            r["location"] or "",
        )
    )
    return [RecallLine.model_construct(**r) for r in rows]  # straight from the database


def on_hand_by_place(lines: Sequence[RecallLine]) -> list[PlaceStock]:
    """What is not shipped, summed per place and unit (lines of unknown quantity counted
    apart), sorted by place: where to go and look, and how much to find there."""
    places: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"quantity": 0.0, "lots": set(), "unknown": 0}
    )
    for line in lines:
        if line.status == "shipped":
            continue
        place = places[(line.location or "", line.uom or "")]
        place["lots"].add(line.lot_id)
        if line.quantity is None:
            place["unknown"] += 1
        else:
            place["quantity"] += line.quantity
    return [
        PlaceStock(
            location=location or None,
            uom=uom or None,
            quantity=p["quantity"],
            lots=len(p["lots"]),
            unknown=p["unknown"],
        )
        for (location, uom), p in sorted(places.items())
    ]
