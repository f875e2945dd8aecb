"""The walk and the trace: where a lot came from (backward) or went (forward), its batches,
receipts and shipments.

The walk is one recursive query over lot_links with UNION (set) semantics: each lot is
visited once however many paths reach it, so diamonds stay cheap and loops (rework, bad
data) terminate by construction; every loop among the reached lots is reported as a gap
(loops.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from cloud_collector import queries
from cloud_collector.trace.gaps import find_gaps
from cloud_collector.trace.models import (
    BatchLot,
    Direction,
    Link,
    Lot,
    QcResult,
    RecallLine,
    Receipt,
    ShipmentLine,
    Trace,
    TracedBatch,
)
from cloud_collector.trace.rows import fetch, lots_where

_WALK = {
    # From outputs to inputs: where did it come from.
    "backward": """
        with recursive reach(lot_id) as (
            {start}
            union
            select l.input_lot from reach join lot_links l on l.output_lot = reach.lot_id
        ) select lot_id from reach""",
    # From inputs to outputs: where did it go.
    "forward": """
        with recursive reach(lot_id) as (
            {start}
            union
            select l.output_lot from reach join lot_links l on l.input_lot = reach.lot_id
        ) select lot_id from reach""",
}
# Where a walk starts: one lot (a trace, a recall), or several (the lots the batches of a
# recall by condition made).
Start = int | Sequence[int]


def _walk(direction: Direction, start: Start) -> tuple[str, dict[str, Any]]:
    """The walk's statement and parameters from `start`."""
    if isinstance(start, int):
        return _WALK[direction].format(start="select %(lot)s::bigint"), {"lot": start}
    many = "select unnest(%(lots)s::bigint[])"
    return _WALK[direction].format(start=many), {"lots": list(start)}


_COUNT_ONLY = "select count(*) from ({walk}) w"


@dataclass(frozen=True)
class Reached:
    """The lots a walk reached, as the relation `reached` (column lot_id) of the statements
    passed through `sql()` and run with `params`: a temporary table where the session may
    create one, else (a read standby, the API's read-only sessions) the walk's ids given to
    each statement as an array: the planner sizes an array constant's rows by its length."""

    ids: list[int] | None  # None: the temporary table holds them

    def sql(self, statement: str) -> str:
        if self.ids is None:
            return statement
        return f"with reached(lot_id) as (select unnest(%(reached)s::bigint[])) {statement}"

    @property
    def params(self) -> dict[str, Any]:
        return {} if self.ids is None else {"reached": self.ids}


@asynccontextmanager
async def reached_table(
    conn: AsyncConnection, start: Start, direction: Direction
) -> AsyncIterator[Reached]:
    """The lots `start` (a lot id, or several) reaches, as the temporary table `reached` for
    the statements run inside, in one transaction. Analyzed, so the planner sizes the joins
    to it: index probes for ten thousand lots, merge joins for half a million (a CTE would
    be guessed small).
    Where no table may be created (queries.writable), the ids themselves (Reached)."""
    async with conn.transaction():
        row = await (await conn.execute("select current_setting('work_mem')")).fetchone()
        # Sorts and hashes over half a million lots stay in memory (the default spills).
        await conn.execute("set local work_mem = '64MB'")
        if not queries.writable(conn):
            yield Reached(await reachable(conn, start, direction))
        else:
            walk, params = _walk(direction, start)
            await conn.execute(
                f"create temp table reached on commit drop as {walk}",  # type: ignore[arg-type]
                params,
            )
            await conn.execute("analyze reached")
            yield Reached(None)
            # Within a caller's transaction this block is only a savepoint: leave nothing.
            await conn.execute("drop table reached")
        await conn.execute("select set_config('work_mem', %s, true)", (row[0] if row else "4MB",))


async def reachable(conn: AsyncConnection, start: Start, direction: Direction) -> list[int]:
    """The lots `start` (a lot id, or several) reaches, itself included."""
    cur = await conn.execute(*_walk(direction, start))
    return [r[0] for r in await cur.fetchall()]


async def count_reachable(conn: AsyncConnection, lot_id: int, direction: Direction) -> int:
    """The bare graph walk, counting the reachable lots (the benchmarks' baseline)."""
    walk, params = _walk(direction, lot_id)
    cur = await conn.execute(_COUNT_ONLY.format(walk=walk), params)  # type: ignore[arg-type]
    row = await cur.fetchone()
    return int(row[0]) if row else 0


# The trading party of one side of an event, captured or our own dock's (event_parties), for
# lines whose ERP document names no one: the owning party, else the possessing party, else
# the location; named from the locations master data or the ERP describe (by the id as sent,
# else by its GLN), from the ERP's customers (by the GLN as customer id), else shown as its
# GS1 key. One index probe per line, and none where the ERP has named the party
# ({named}). `{alias}`: the receipts or shipment_lines row; `{party}`: the result's alias.
TRADING_PARTY = """
left join lateral (
    select coalesce(p.key, p.party) as party_id,
           coalesce((select x.name from locations x where x.location_id = p.party),
                    (select x.name from locations x where x.gln = p.gln
                     order by x.location_id limit 1),
                    (select c.name from customers c where c.customer_id in (p.gln, p.party)
                     order by c.customer_id limit 1),
                    p.key, p.party) as name
    from event_parties p
    where {named} is null and p.event_id = {alias}.event_id and p.side = '{side}'
    order by array_position(array['owning_party', 'possessing_party', 'location'], p.type)
             nulls last, p.position
    limit 1) {party} on true"""
SUPPLIER = TRADING_PARTY.format(
    named="coalesce(r.supplier, l.supplier)", alias="r", side="source", party="src"
)
CUSTOMER = TRADING_PARTY.format(named="m.customer_id", alias="s", side="destination", party="dst")
_RECEIPTS = f"""
select r.lot_id, r.epc, r.document, coalesce(r.supplier, l.supplier, src.name) as supplier,
       src.party_id as supplier_id, r.quantity, r.uom, r.time, r.location
from receipts r left join lots l using (lot_id) {SUPPLIER}
where r.lot_id = any(%s) order by r.time
"""
_SHIPMENT_LINES = f"""
select s.lot_id, s.epc, s.shipment, m.order_id,
       coalesce(m.customer_id, dst.party_id) as customer_id,
       coalesce(c.name, dst.name) as customer, m.ship_to, m.carrier, s.quantity, s.uom, s.time,
       s.location
from shipment_lines s left join shipments m using (shipment)
left join customers c using (customer_id) {CUSTOMER}
where s.lot_id = any(%s) order by s.time
"""


async def trace(conn: AsyncConnection, lot: Lot, direction: Direction) -> Trace:
    ids = await reachable(conn, lot.lot_id, direction)
    lots = await lots_where(conn, "lot_id = any(%s)", (ids,))
    links = [
        Link(**r)
        for r in await fetch(
            conn,
            "select input_lot, output_lot, batch_id from lot_links"
            " where output_lot = any(%s) and input_lot = any(%s)",
            ids,
            ids,
        )
    ]
    batch_ids = sorted({link.batch_id for link in links} | {x.batch_id for x in lots if x.batch_id})
    if direction == "forward":
        # Only the batches that made the descendants: not the ones that made the lot itself.
        batch_ids = sorted({link.batch_id for link in links})
    batches = await traced_batches(conn, batch_ids, detail=direction == "backward")
    receipts = [Receipt(**r) for r in await fetch(conn, _RECEIPTS, ids)]
    shipments = await shipment_lines(conn, ids)
    gaps = await find_gaps(conn, lot, ids, [tb.batch.batch_id for tb in batches], direction)
    return Trace(
        direction=direction,
        lot=lot,
        lots=lots,
        links=links,
        batches=batches,
        receipts=receipts,
        shipments=shipments,
        customers=by_customer(shipments),
        gaps=gaps,
    )


async def shipment_lines(conn: AsyncConnection, ids: list[int]) -> list[ShipmentLine]:
    return [ShipmentLine(**r) for r in await fetch(conn, _SHIPMENT_LINES, ids)]


def by_customer(lines: Sequence[ShipmentLine | RecallLine]) -> list[dict[str, Any]]:
    """Who received what: per customer (or per shipment, when the ERP has not said whose)."""
    totals: dict[tuple[str | None, str | None], dict[str, Any]] = {}
    for line in lines:
        key = (line.customer_id, line.shipment if line.customer_id is None else None)
        entry = totals.setdefault(
            key,
            {
                "customer_id": line.customer_id,
                "customer": line.customer,
                "shipments": set(),
                "orders": set(),
                "lots": defaultdict(float),
                "units": 0,
            },
        )
        entry["shipments"].add(line.shipment)
        if line.order_id:
            entry["orders"].add(line.order_id)
        if line.quantity is not None and line.lot_id is not None:
            entry["lots"][line.lot_id] += line.quantity
        if line.epc:
            entry["units"] += 1
    return [
        {
            **e,
            "shipments": sorted(s for s in e["shipments"] if s),
            "orders": sorted(e["orders"]),
            "lots": dict(e["lots"]),
        }
        for e in totals.values()
    ]


_BATCHES = """
select batch_id, line_id, edge_id, started_at, started_by, ended_at, ended_by,
    numbered_by_rule
from batches where batch_id = any(%s) order by started_at nulls last, batch_id
"""
_OPERATORS = """
select batch_id, array_agg(distinct o order by o) as operators
from trace_events, jsonb_array_elements_text(coalesce(body->'operators', '[]')) o
where batch_id = any(%s) and event_type = 'TransformationEvent' group by batch_id
"""
_QC = """
select batch_id, lot_id, kind, check_name, value, unit, passed, inspector, time
from qc_results where batch_id = any(%s) order by time
"""
# Each batch's two sides, summed over its events (a batch may report in several).
_BATCH_SIDE = """
select batch_id, lot_id, sum(quantity) as quantity, nullif(uom, '') as uom,
       sum(items)::int as items, sum(unquantified)::int as unquantified
from {table} where batch_id = any(%s) group by batch_id, lot_id, uom order by lot_id, uom
"""
_BATCH_INPUTS = _BATCH_SIDE.format(table="batch_inputs")
_BATCH_OUTPUTS = _BATCH_SIDE.format(table="batch_outputs")


async def traced_batches(
    conn: AsyncConnection, batch_ids: list[str], detail: bool
) -> list[TracedBatch]:
    """The traced batches in three statements whatever their number; with `detail` (a
    backward trace) also each one's parameters and excursions, from the rollups."""
    batches = [queries.Batch(**r) for r in await fetch(conn, _BATCHES, batch_ids)]
    operators = {r["batch_id"]: r["operators"] for r in await fetch(conn, _OPERATORS, batch_ids)}
    qc: dict[str, list[QcResult]] = defaultdict(list)
    for r in await fetch(conn, _QC, batch_ids):
        qc[r["batch_id"]].append(QcResult(**r))
    sides: dict[str, dict[str, list[BatchLot]]] = {"inputs": {}, "outputs": {}}
    for side, sql in (("inputs", _BATCH_INPUTS), ("outputs", _BATCH_OUTPUTS)):
        for r in await fetch(conn, sql, batch_ids):
            sides[side].setdefault(r.pop("batch_id"), []).append(BatchLot(**r))
    summaries = await queries.summaries(conn, batch_ids) if detail else {}
    out = []
    for batch in batches:
        parameters, excursions = summaries.get(batch.batch_id, ([], []))
        out.append(
            TracedBatch(
                batch=batch,
                equipment=sorted({t.device for t in parameters}),
                operators=operators.get(batch.batch_id, []),
                qc=qc[batch.batch_id],
                inputs=sides["inputs"].get(batch.batch_id, []),
                outputs=sides["outputs"].get(batch.batch_id, []),
                parameters=parameters,
                excursions=excursions,
            )
        )
    return out
