"""Trace queries: which lot a person means, where it came from (backward), where it went
(forward), and the recall list. Every answer lists the gaps it met.

The walk is one recursive query over lot_links with UNION (set) semantics: each lot is
visited once however many paths reach it, so diamonds stay cheap and loops (rework, bad
data) terminate by construction; a loop through the traced lot is reported as a gap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud_collector import queries
from protocols import gs1

Direction = Literal["backward", "forward"]
# A batch's inputs and outputs in one unit of measure should balance within this fraction.
MASS_BALANCE_TOLERANCE = 0.05


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lot(Strict):
    lot_id: int
    gtin: str
    lot_code: str
    quantity: float | None  # the sum of what made it, or else of what received it
    uom: str | None
    origin: str
    batch_id: str | None
    supplier: str | None
    supplier_lot: str | None
    shipped_quantity: float | None = None  # its shipment lines, in its unit of measure
    consumed_quantity: float | None = None  # what batches used of it, in its unit
    quantity_note: str | None = None  # why a quantity is missing or a line not subtracted


class Link(Strict):
    """An edge of the walk: the batch made the output lot from (among others) the input."""

    input_lot: int
    output_lot: int
    batch_id: str


class BatchLot(Strict):
    """What a batch used (or made) of one lot in one unit of measure: the sum of its items."""

    lot_id: int
    quantity: float | None  # None: none of the items gave a quantity
    uom: str | None
    items: int  # units and lot lines of the lot the batch's events named
    unquantified: int  # of them, how many gave no quantity


class ShipmentLine(Strict):
    lot_id: int | None
    epc: str | None
    shipment: str | None
    order_id: str | None
    customer_id: str | None
    customer: str | None
    ship_to: str | None
    carrier: str | None
    quantity: float | None
    uom: str | None
    time: datetime
    location: str | None


class Receipt(Strict):
    lot_id: int | None
    epc: str | None
    document: str | None
    supplier: str | None
    quantity: float | None
    uom: str | None
    time: datetime
    location: str | None


class QcResult(Strict):
    batch_id: str | None
    lot_id: int | None
    kind: str
    check_name: str
    value: float | None
    unit: str | None
    passed: bool
    inspector: str | None
    time: datetime


class TracedBatch(Strict):
    batch: queries.Batch
    equipment: list[str]  # the devices whose readings are bound to the batch
    operators: list[str]
    qc: list[QcResult]
    inputs: list[BatchLot]  # what it consumed, per lot
    outputs: list[BatchLot]  # what it produced, per lot
    parameters: list[queries.TagSummary]
    excursions: list[queries.Excursion]


class Trace(Strict):
    direction: Direction
    lot: Lot
    lots: list[Lot]
    links: list[Link]
    batches: list[TracedBatch]
    receipts: list[Receipt]
    shipments: list[ShipmentLine]
    customers: list[dict[str, Any]]
    gaps: list[str]


class AmbiguousLot(Exception):
    def __init__(self, text: str, candidates: list[Lot]) -> None:
        super().__init__(f"{text!r} names {len(candidates)} lots: say which (GTIN + lot)")
        self.candidates = candidates


class UnknownLot(Exception):
    pass


# -- which lot ---------------------------------------------------------------------------

_LOT_COLUMNS = (
    "lot_id, gtin, lot_code, quantity, uom, origin, batch_id, supplier, supplier_lot,"
    " shipped_quantity, consumed_quantity, quantity_note"
)


async def _lots(conn: AsyncConnection, where: str, params: tuple[Any, ...]) -> list[Lot]:
    cur = conn.cursor(row_factory=dict_row)
    rows = await (
        await cur.execute(f"select {_LOT_COLUMNS} from lots where {where}", params)
    ).fetchall()
    return [Lot(**r) for r in rows]


async def resolve(conn: AsyncConnection, text: str) -> Lot:
    """The lot `text` names: an internal id, GTIN + lot (EPC class URI, Digital Link, GS1
    element string), a unit's EPC or SSCC, or a lot code alone (if it is unambiguous)."""
    text = text.strip()
    found: list[Lot] = []
    key = None if text.isdigit() and len(text) < 14 else gs1.parse(text)
    if text.isdigit() and len(text) < 14:
        found = await _lots(conn, "lot_id = %s", (int(text),))
    elif key and key.gtin and key.lot:
        found = await _lots(conn, "gtin = %s and lot_code = %s", (key.gtin, key.lot))
    elif key and key.sscc:
        found = await _unit_lots(conn, key.sscc)
    elif text.startswith("urn:epc:id:"):
        found = await _unit_lots(conn, text)
    elif not (text.startswith("(") or gs1.GS in text):
        found = await _lots(conn, "lot_code = %s or supplier_lot = %s", (text, text))
    if not found:
        raise UnknownLot(
            f"no lot is known as {text!r}: give a lot id, GTIN + lot (urn:epc:class:lgtin:..., "
            "01/{gtin}/10/{lot} or (01)...(10)...), a unit's EPC or SSCC, or a lot code"
        )
    if len(found) > 1:
        raise AmbiguousLot(text, found)
    return found[0]


async def _unit_lots(conn: AsyncConnection, key: str) -> list[Lot]:
    return await _lots(
        conn,
        "lot_id in (select lot_id from units where epc = %s or sscc = %s or epc = %s)",
        (key, key, f"sscc:{key}"),
    )


# -- the walk ----------------------------------------------------------------------------

_WALK = {
    # From outputs to inputs: where did it come from.
    "backward": """
        with recursive reach(lot_id) as (
            select %(lot)s::bigint
            union
            select l.input_lot from reach join lot_links l on l.output_lot = reach.lot_id
        ) select lot_id from reach""",
    # From inputs to outputs: where did it go.
    "forward": """
        with recursive reach(lot_id) as (
            select %(lot)s::bigint
            union
            select l.output_lot from reach join lot_links l on l.input_lot = reach.lot_id
        ) select lot_id from reach""",
}
_COUNT_ONLY = "select count(*) from ({walk}) w"


@asynccontextmanager
async def _reached(conn: AsyncConnection, lot_id: int, direction: Direction) -> AsyncIterator[None]:
    """The lots `lot_id` reaches, as the temporary table `reached` for the statements run
    inside, in one transaction. Analyzed, so the planner sizes the joins to it: index probes
    for ten thousand lots, merge joins for half a million (a CTE would be guessed small)."""
    async with conn.transaction():
        row = await (await conn.execute("select current_setting('work_mem')")).fetchone()
        # Sorts and hashes over half a million lots stay in memory (the default spills).
        await conn.execute("set local work_mem = '64MB'")
        await conn.execute(
            f"create temp table reached on commit drop as {_WALK[direction]}",  # type: ignore[arg-type]
            {"lot": lot_id},
        )
        await conn.execute("analyze reached")
        yield
        # Within a caller's transaction this block is only a savepoint: leave nothing behind.
        await conn.execute("drop table reached")
        await conn.execute("select set_config('work_mem', %s, true)", (row[0] if row else "4MB",))


async def reachable(conn: AsyncConnection, lot_id: int, direction: Direction) -> list[int]:
    cur = await conn.execute(_WALK[direction], {"lot": lot_id})
    return [r[0] for r in await cur.fetchall()]


async def count_reachable(conn: AsyncConnection, lot_id: int, direction: Direction) -> int:
    """The bare graph walk, counting the reachable lots (the benchmarks' baseline)."""
    cur = await conn.execute(_COUNT_ONLY.format(walk=_WALK[direction]), {"lot": lot_id})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _rows(conn: AsyncConnection, sql: str, *params: Any) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(sql, params)).fetchall()


async def trace(conn: AsyncConnection, lot: Lot, direction: Direction) -> Trace:
    ids = await reachable(conn, lot.lot_id, direction)
    lots = await _lots(conn, "lot_id = any(%s)", (ids,))
    links = [
        Link(**r)
        for r in await _rows(
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
    batches = await _batches(conn, batch_ids, detail=direction == "backward")
    receipts = [
        Receipt(**r)
        for r in await _rows(
            conn,
            "select r.lot_id, r.epc, r.document, coalesce(r.supplier, l.supplier) as supplier,"
            " r.quantity, r.uom, r.time, r.location from receipts r left join lots l using (lot_id)"
            " where r.lot_id = any(%s) order by r.time",
            ids,
        )
    ]
    shipments = await shipment_lines(conn, ids)
    gaps = await _gaps(conn, lot, ids, [tb.batch.batch_id for tb in batches], direction)
    return Trace(
        direction=direction,
        lot=lot,
        lots=lots,
        links=links,
        batches=batches,
        receipts=receipts,
        shipments=shipments,
        customers=_customers(shipments),
        gaps=gaps,
    )


async def shipment_lines(conn: AsyncConnection, ids: list[int]) -> list[ShipmentLine]:
    return [
        ShipmentLine(**r)
        for r in await _rows(
            conn,
            "select s.lot_id, s.epc, s.shipment, m.order_id, m.customer_id, c.name as customer,"
            " m.ship_to, m.carrier, s.quantity, s.uom, s.time, s.location"
            " from shipment_lines s left join shipments m using (shipment)"
            " left join customers c using (customer_id)"
            " where s.lot_id = any(%s) order by s.time",
            ids,
        )
    ]


def _customers(lines: Sequence[ShipmentLine | RecallLine]) -> list[dict[str, Any]]:
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


# The batches that made lots of the traced set out of lots of the set.
_BATCHES_BETWEEN = """
select distinct k.batch_id from lot_links k
join reached o on o.lot_id = k.output_lot join reached i on i.lot_id = k.input_lot
"""
_BATCHES = """
select batch_id, line_id, edge_id, started_at, started_by, ended_at, ended_by
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


async def _batches(conn: AsyncConnection, batch_ids: list[str], detail: bool) -> list[TracedBatch]:
    """The traced batches in three statements whatever their number; with `detail` (a
    backward trace) also each one's parameters and excursions, from the rollups."""
    batches = [queries.Batch(**r) for r in await _rows(conn, _BATCHES, batch_ids)]
    operators = {r["batch_id"]: r["operators"] for r in await _rows(conn, _OPERATORS, batch_ids)}
    qc: dict[str, list[QcResult]] = defaultdict(list)
    for r in await _rows(conn, _QC, batch_ids):
        qc[r["batch_id"]].append(QcResult(**r))
    sides: dict[str, dict[str, list[BatchLot]]] = {"inputs": {}, "outputs": {}}
    for side, sql in (("inputs", _BATCH_INPUTS), ("outputs", _BATCH_OUTPUTS)):
        for r in await _rows(conn, sql, batch_ids):
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


# What the reached lots lack, set-based (one probe per lot, whatever the trace's size).
# `produced` and `received` are global: a lot made by a batch whose inputs lie outside the
# traced set was still made. A loop: the traced lot is an input of one of its own ancestors
# (backward) or an output of one of its own descendants (forward).
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
union all
select 'loop', l.lot_id, l.gtin, l.lot_code, null from lots l
where l.lot_id = %(lot)s and exists (
    select 1 from lot_links k join ids on ids.lot_id = k.{far} where k.{near} = %(lot)s)
order by kind desc, lot_id
"""
# Written out per direction, so that the loop check probes an index (a column chosen by a
# parameter cannot: that was a scan of every link per trace).
_LOOP_COLUMNS = {
    "backward": ("true", "input_lot", "output_lot"),
    "forward": ("false", "output_lot", "input_lot"),
}
# The traced lots: given as an array, or the table `_reached` filled.
_GIVEN, _REACHED = "select unnest(%(ids)s::bigint[]) as lot_id", "select lot_id from reached"
_LOT_GAPS = {
    (direction, source): _LOT_GAPS_OF.format(ids=source, backward=b, near=near, far=far)
    for direction, (b, near, far) in _LOOP_COLUMNS.items()
    for source in (_GIVEN, _REACHED)
}
_LOT_GAP_TEXT = {
    "no_origin": "lot {name} has no recorded origin (neither produced nor received)",
    "never_made": "lot {name} was shipped but never produced or received",
    "loop": "lot {name} reaches itself: a loop in the genealogy (rework or bad data)",
    "quantity": "lot {name}: {note}",
}


async def _gaps(
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
        for r in await _rows_named(conn, _LOT_GAPS[direction, source], params)
    ]
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


async def _batch_gaps(conn: AsyncConnection, batch_ids: list[str]) -> list[str]:
    """What the traced batches lack: inputs, readings, balance, readings that never
    arrived; set-based, a few statements however many batches."""
    no_inputs = {r["batch_id"] for r in await _rows(conn, _NO_INPUTS, batch_ids)}
    with_readings = {r["batch_id"] for r in await _rows(conn, _WITH_READINGS, batch_ids)}
    gaps = []
    for batch_id in batch_ids:
        if batch_id in no_inputs:
            gaps.append(f"batch {batch_id} recorded no inputs")
        if batch_id not in with_readings:
            gaps.append(f"batch {batch_id} has no readings")
    params = {"batches": batch_ids, "tolerance": MASS_BALANCE_TOLERANCE}
    gaps += [
        f"batch {r['batch_id']}: inputs {r['inputs']:g} {r['uom']} and outputs "
        f"{r['outputs']:g} {r['uom']} do not balance within {MASS_BALANCE_TOLERANCE:.0%}"
        for r in await _rows_named(conn, _UNBALANCED, params)
    ]
    gaps += [
        f"batch {r['batch_id']}: {r['unquantified']} of the {r['items']} items of lot "
        f"{_name(r['gtin'], r['lot_code'], r['lot_id'])} it {r['side']} gave no quantity: "
        "the sum it keeps is short by what they held"
        for r in await _rows_named(conn, _PARTLY_COUNTED, params)
    ]
    gaps += [
        f"batch {r['batch_id']}: readings {r['first_missing']}..{r['last_missing']} of edge "
        f"{r['edge_id']} never arrived: the batch's record is incomplete"
        for r in await _rows(conn, _SEQUENCE_GAPS, batch_ids)
    ]
    return gaps


class RecallLine(Strict):
    lot_id: int
    gtin: str
    lot_code: str
    status: Literal["shipped", "on_hand", "unknown"]
    location: str | None
    customer_id: str | None
    customer: str | None
    order_id: str | None
    shipment: str | None
    quantity: float | None
    uom: str | None
    epc: str | None = None  # the unit (pallet SSCC, case SGTIN) it went out as, if one


class Recall(Strict):
    lot: Lot
    affected_lots: int
    lines: list[RecallLine]
    customers: list[dict[str, Any]]
    gaps: list[str]


async def recall(conn: AsyncConnection, lot: Lot) -> Recall:
    """Every lot the given lot reached, and where each is now: shipped (to whom, on which
    order, how much) or on hand (where, how much is left), and the gaps met on the way."""
    async with _reached(conn, lot.lot_id, "forward"):
        count = await (await conn.execute("select count(*) from reached")).fetchone()
        rows = await _rows_named(conn, _RECALL_LINES, {})
        batch_ids = [r["batch_id"] for r in await _rows(conn, _BATCHES_BETWEEN)]
        gaps = await _gaps(conn, lot, None, batch_ids, "forward")
    # Each lot's shipments, then its remainder: the same answer every time.
    rows.sort(key=lambda r: (r["lot_id"], r["status"] != "shipped", r["shipment"] or ""))
    lines = [RecallLine.model_construct(**r) for r in rows]  # straight from the database
    return Recall(
        lot=lot,
        affected_lots=count[0] if count else 0,
        lines=lines,
        customers=_customers([x for x in lines if x.status == "shipped"]),
        gaps=gaps,
    )


RECALL_CSV_COLUMNS = list(RecallLine.model_fields)
TRACE_CSV_COLUMNS = list(Lot.model_fields)


class Condition(Strict):
    """Which readings count as the process going wrong, and when to look."""

    tag: str = Field(min_length=1, max_length=64)
    device: str | None = Field(default=None, max_length=64)  # any device with this tag
    condition: Literal["above", "below", "bad_quality"]
    limit: float | None = None  # required for above / below
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")

    @model_validator(mode="after")
    def _limit(self) -> Condition:
        if self.condition != "bad_quality" and self.limit is None:
            raise ValueError(f"condition {self.condition!r} needs a limit")
        if self.end <= self.start:
            raise ValueError("'to' must be after 'from'")
        return self


class ConditionBatch(Strict):
    batch_id: str
    line_id: str | None
    readings: int  # how many readings met the condition
    first_time: datetime
    last_time: datetime
    worst: float | None


class ConditionRecall(Strict):
    condition: Condition
    batches: list[ConditionBatch]
    lots: list[Lot]  # the batches' outputs and everything downstream of them
    shipments: list[ShipmentLine]
    customers: list[dict[str, Any]]
    gaps: list[str]


_CONDITION_SQL = {
    "above": "r.quality = 'good' and r.value > %(limit)s",
    "below": "r.quality = 'good' and r.value < %(limit)s",
    "bad_quality": "r.quality = 'bad'",
}
_WORST = {"above": "max(r.value)", "below": "min(r.value)", "bad_quality": "null::float8"}
_FORWARD_FROM_MANY = """
with recursive reach(lot_id) as (
    select unnest(%(lots)s::bigint[])
    union
    select l.output_lot from reach join lot_links l on l.input_lot = reach.lot_id
) select lot_id from reach
"""


async def recall_by_condition(conn: AsyncConnection, c: Condition) -> ConditionRecall:
    """The batches that ran while the condition held, and everything downstream of them."""
    sql = f"""
        select r.batch_id, max(r.line_id) as line_id, count(*) as readings,
               min(r.time) as first_time, max(r.time) as last_time,
               {_WORST[c.condition]} as worst
        from readings r
        where r.tag = %(tag)s and (%(device)s::text is null or r.device = %(device)s)
          and r.time >= %(start)s and r.time < %(end)s and r.batch_id is not null
          and {_CONDITION_SQL[c.condition]}
        group by r.batch_id order by min(r.time)
    """
    params = {"tag": c.tag, "device": c.device, "start": c.start, "end": c.end, "limit": c.limit}
    batches = [ConditionBatch(**r) for r in await _rows_named(conn, sql, params)]
    batch_ids = [b.batch_id for b in batches]
    sources = [
        r["lot_id"]
        for r in await _rows(
            conn,
            "select lot_id from lots where batch_id = any(%s)"
            " union select output_lot from lot_links where batch_id = any(%s)",
            batch_ids,
            batch_ids,
        )
    ]
    cur = await conn.execute(_FORWARD_FROM_MANY, {"lots": sources})
    ids = [r[0] for r in await cur.fetchall()]
    lots = await _lots(conn, "lot_id = any(%s)", (ids,))
    shipments = await shipment_lines(conn, ids)
    gaps = []
    if not batches:
        gaps.append("no batch ran while the condition held in that time range")
    for b in batches:
        if b.batch_id not in {x.batch_id for x in lots}:
            gaps.append(f"batch {b.batch_id} has no recorded output lot: nothing to follow")
    unbatched = await _rows_named(
        conn,
        f"""select count(*) as n from readings r
            where r.tag = %(tag)s and (%(device)s::text is null or r.device = %(device)s)
              and r.time >= %(start)s and r.time < %(end)s and r.batch_id is null
              and {_CONDITION_SQL[c.condition]}""",
        params,
    )
    if unbatched and unbatched[0]["n"]:
        gaps.append(f"{unbatched[0]['n']} readings met the condition while no batch ran")
    return ConditionRecall(
        condition=c,
        batches=batches,
        lots=lots,
        shipments=shipments,
        customers=_customers(shipments),
        gaps=gaps,
    )


async def _rows_named(
    conn: AsyncConnection, sql: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(sql, params)).fetchall()  # type: ignore[arg-type]


# The recall list over the reached lots (the table `_reached` fills): every shipment line
# of a lot, and what is left of each lot not shipped or used in full and where it was last
# seen (a lot of unknown quantity is listed as 'unknown', with its last place: a recall
# errs on the side of stock that may still be there). What is left is what made or
# received the lot less what was shipped and what batches used of it (in its unit of
# measure), all kept on the lot at ingest: at 500,000 lots every extra pass or probe per
# lot costs a few hundred milliseconds.
_RECALL_LINES = """
select l.lot_id, l.gtin, l.lot_code, 'shipped' as status, s.location, m.customer_id,
       c.name as customer, m.order_id, s.shipment, s.quantity, s.uom, s.epc
from reached join shipment_lines s using (lot_id) join lots l using (lot_id)
left join shipments m using (shipment) left join customers c using (customer_id)
union all
select l.lot_id, l.gtin, l.lot_code,
       case when l.quantity is not null then 'on_hand' else 'unknown' end,
       l.location, null, null, null, null,
       l.quantity - coalesce(l.shipped_quantity, 0) - coalesce(l.consumed_quantity, 0),
       l.uom, null
from reached join lots l using (lot_id)
where l.quantity is null
   or l.quantity - coalesce(l.shipped_quantity, 0) - coalesce(l.consumed_quantity, 0) > 0
"""


async def recall_csv(conn: AsyncConnection, lot: Lot) -> AsyncIterator[bytes]:
    """The recall list as CSV lines (RECALL_CSV_COLUMNS order, no header), formatted by the
    database and passed on in blocks as it produces them: memory stays flat however far
    the lot reached."""
    statement = f"copy ({_RECALL_LINES}) to stdout (format csv)"
    async with (
        _reached(conn, lot.lot_id, "forward"),
        conn.cursor() as cur,
        cur.copy(statement) as copy,  # type: ignore[arg-type]
    ):
        async for block in copy:
            yield bytes(block)
