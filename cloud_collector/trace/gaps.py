"""Where a trace is not complete (contract 5): lots without origin, shipped lots never made,
loops, and what the traced batches lack (inputs, readings, balance, readings that never
arrived)."""

from __future__ import annotations

from typing import Literal

from psycopg import AsyncConnection

from cloud_collector.trace.loops import GIVEN, loop_gaps
from cloud_collector.trace.models import Direction, Lot
from cloud_collector.trace.rows import fetch, fetch_named
from protocols.strict import Strict

# A batch's inputs and outputs in one unit of measure should balance within this fraction.
MASS_BALANCE_TOLERANCE = 0.05


# What the reached lots lack, set-based (one probe per lot, whatever the trace's size).
# `produced` and `received` are global: a lot made by a batch whose inputs lie outside the
# traced set was still made. Loops: every one among the traced lots (loops.py).
_LOT_GAPS_OF = """
with ids as ({ids}),
-- Probes per traced lot, written so that the planner cannot turn them into joins over
-- whole tables (it did, misjudging anti-joins: 0.8 s for ten thousand lots).
bare as (
    select l.lot_id, l.gtin, l.lot_code, l.origin
    from ids cross join lateral (
        select * from lots where lots.lot_id = ids.lot_id limit 1) l
    where l.origin <> 'supplier'
      and (select 1 from lot_links k where k.output_lot = l.lot_id limit 1) is null
      and (select 1 from receipts r where r.lot_id = l.lot_id limit 1) is null
)
select 'no_origin' as kind, lot_id, gtin, lot_code, null as note from bare where {backward}
union all
select 'never_made', b.lot_id, b.gtin, b.lot_code, null from bare b
where b.origin = 'unknown' and exists (select 1 from shipment_lines s where s.lot_id = b.lot_id)
union all
select 'quantity', l.lot_id, l.gtin, l.lot_code, l.quantity_note from ids cross join lateral (
    select * from lots where lots.lot_id = ids.lot_id and quantity_note is not null limit 1) l
order by kind desc, lot_id
"""
_BACKWARD = {"backward": "true", "forward": "false"}
# The traced lots: given as an array, or the table `reached` that walk.reached_table fills.
_GIVEN, _REACHED = GIVEN, "select lot_id from reached"
_LOT_GAPS = {
    (direction, source): _LOT_GAPS_OF.format(ids=source, backward=b)
    for direction, b in _BACKWARD.items()
    for source in (_GIVEN, _REACHED)
}
_LOT_GAP_TEXT = {
    "no_origin": "lot {name} has no recorded origin (neither produced nor received)",
    "never_made": "lot {name} was shipped but never produced or received",
    "quantity": "lot {name}: {note}",
}


async def find_gaps(
    conn: AsyncConnection,
    lot: Lot,
    ids: list[int] | None,
    batch_ids: list[str],
    direction: Direction,
) -> list[str]:
    """The gaps a trace met: lots without origin, shipped lots never made, loops, and what
    the traced batches lack (inputs, readings, balance, readings that never arrived). The
    traced lots are `ids`, or with None the table `reached`."""
    source = _GIVEN if ids is not None else _REACHED
    params = {"ids": ids, "lot": lot.lot_id}
    gaps = [
        _LOT_GAP_TEXT[r["kind"]].format(
            name=_name(r["gtin"], r["lot_code"], r["lot_id"]), note=r["note"]
        )
        for r in await fetch_named(conn, _LOT_GAPS[direction, source], params)
    ]
    gaps += await loop_gaps(conn, source, params, direction)
    return gaps + await _batch_gaps(conn, batch_ids)


def _name(gtin: str, lot_code: str, lot_id: int) -> str:
    return f"{lot_code} (GTIN {gtin}, id {lot_id})" if gtin else f"{lot_code} (id {lot_id})"


_NO_INPUTS = """
select batch_id from trace_events
where batch_id = any(%s) and event_type = 'TransformationEvent' and 'no_inputs' = any(flags)
"""
_WITH_READINGS = "select distinct batch_id from batch_tag_stats where batch_id = any(%s)"
# Readings an edge numbered but the collector never committed, inside a batch's time range
# (the readings on both sides of the hole, whose times ingest kept, tell when it was),
# unless the edge reported them dropped by its outbox policy.
_SEQUENCE_GAPS = """
select b.batch_id, b.edge_id, g.first_missing, g.last_missing
from batches b join stream_gaps g on g.edge_id = b.edge_id and g.stream = 'readings'
where b.batch_id = any(%s)
  and g.before_time <= coalesce(b.ended_at, 'infinity')
  and g.after_time >= coalesce(b.started_at, '-infinity')
  and not exists (select 1 from readings_dropped d join edge_streams e using (stream_id)
                  where e.edge_id = g.edge_id and e.epoch = g.epoch
                    and d.dropped_stream = 'readings'
                    and d.first_seq <= g.first_missing and d.last_seq >= g.last_missing)
order by b.batch_id, g.first_missing
"""
# Batches whose inputs and outputs in one unit differ by more than the tolerance: all of
# each batch's inputs and outputs (not only those inside the traced set), each item counted
# once. Quantities with no unit of measure are never compared.
_UNBALANCED = """
with inputs as (
    select batch_id, uom, sum(quantity) as quantity from batch_inputs
    where batch_id = any(%(batches)s) and quantity is not null and uom <> ''
    group by batch_id, uom
), outputs as (
    select batch_id, uom, sum(quantity) as quantity from batch_outputs
    where batch_id = any(%(batches)s) and quantity is not null and uom <> ''
    group by batch_id, uom
)
select batch_id, uom, i.quantity as inputs, o.quantity as outputs
from inputs i join outputs o using (batch_id, uom)
where abs(i.quantity - o.quantity) > %(tolerance)s * greatest(i.quantity, o.quantity)
order by batch_id, uom
"""
# Lots of which a batch named some items with a quantity and some without: the sum it
# keeps is short by what the others held.
_PARTLY_COUNTED = """
select s.batch_id, s.side, l.gtin, l.lot_code, l.lot_id, s.items, s.unquantified
from (select batch_id, 'used' as side, lot_id, sum(items) as items,
             sum(unquantified) as unquantified, count(quantity) as counted
      from batch_inputs where batch_id = any(%(batches)s) group by batch_id, lot_id
      union all
      select batch_id, 'made', lot_id, sum(items), sum(unquantified), count(quantity)
      from batch_outputs where batch_id = any(%(batches)s) group by batch_id, lot_id) s
join lots l using (lot_id)
where s.unquantified > 0 and s.counted > 0
order by s.batch_id, s.side desc, l.lot_id
"""


BatchGapKind = Literal["no_inputs", "no_readings", "unbalanced", "partly_counted", "never_arrived"]


class BatchGap(Strict):
    """One thing a batch's record lacks: its kind (the graph marks the batch by it) and the
    sentence a trace's gaps list holds."""

    batch_id: str
    kind: BatchGapKind
    text: str


async def _batch_gaps(conn: AsyncConnection, batch_ids: list[str]) -> list[str]:
    return [g.text for g in await batch_gaps(conn, batch_ids)]


async def batch_gaps(conn: AsyncConnection, batch_ids: list[str]) -> list[BatchGap]:
    """What the traced batches lack: inputs, readings, balance, readings that never
    arrived; set-based, a few statements however many batches."""
    no_inputs = {r["batch_id"] for r in await fetch(conn, _NO_INPUTS, batch_ids)}
    with_readings = {r["batch_id"] for r in await fetch(conn, _WITH_READINGS, batch_ids)}
    gaps = []
    for batch_id in batch_ids:
        if batch_id in no_inputs:
            gaps.append(
                BatchGap(
                    batch_id=batch_id, kind="no_inputs", text=f"batch {batch_id} recorded no inputs"
                )
            )
        if batch_id not in with_readings:
            gaps.append(
                BatchGap(
                    batch_id=batch_id, kind="no_readings", text=f"batch {batch_id} has no readings"
                )
            )
    params = {"batches": batch_ids, "tolerance": MASS_BALANCE_TOLERANCE}
    gaps += [
        BatchGap(
            batch_id=r["batch_id"],
            kind="unbalanced",
            text=f"batch {r['batch_id']}: inputs {r['inputs']:g} {r['uom']} and outputs "
            f"{r['outputs']:g} {r['uom']} do not balance within {MASS_BALANCE_TOLERANCE:.0%}",
        )
        for r in await fetch_named(conn, _UNBALANCED, params)
    ]
    gaps += [
        BatchGap(
            batch_id=r["batch_id"],
            kind="partly_counted",
            text=f"batch {r['batch_id']}: {r['unquantified']} of the {r['items']} items of lot "
            f"{_name(r['gtin'], r['lot_code'], r['lot_id'])} it {r['side']} gave no quantity: "
            "the sum it keeps is short by what they held",
        )
        for r in await fetch_named(conn, _PARTLY_COUNTED, params)
    ]
    gaps += [
        BatchGap(
            batch_id=r["batch_id"],
            kind="never_arrived",
            text=f"batch {r['batch_id']}: readings {r['first_missing']}..{r['last_missing']} of "
            f"edge {r['edge_id']} never arrived: the batch's record is incomplete",
        )
        for r in await fetch(conn, _SEQUENCE_GAPS, batch_ids)
    ]
    return gaps
