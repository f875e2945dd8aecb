"""A case's affected set, as the recall computes it now: the recall's answer read as it is
(cloud_collector/trace: `recall` for a lot, `recall_by_condition` for a condition), never a
query of its own, so that whatever the recall learns (places by bin, holds) the cases learn.

Members and their keys (a key names a member within its case and kind, stable across
recomputations):
- lot: the lot id; every lot of the forward trace (also those used up, which the recall's
  lines do not list).
- shipment: one shipment line: shipment, lot id and unit (the pallet or case it went as).
- customer: the ERP's customer id (or the captured event's destination party); a shipment
  whose customer nobody named is its own customer, `shipment SH-1`, as the recall's
  per-customer answer has it.
- place: a lot's stock at one place, `place|lot id` (the place as the recall names it).
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from cloud_collector import trace
from cloud_collector.recall_cases.models import AffectedSet, Member

UNKNOWN_PLACE = "(place unknown)"
_LOT_KEYS = "select lot_id, gtin, lot_code from lots where lot_id = any(%s) order by lot_id"


def customer_key(line: trace.RecallLine) -> str:
    return line.customer_id or f"shipment {line.shipment}"


def _line_members(line: trace.RecallLine) -> list[Member]:
    common: dict[str, Any] = {"lot_id": line.lot_id, "gtin": line.gtin, "lot_code": line.lot_code}
    if line.status == "shipped":
        who = customer_key(line)
        key = f"{line.shipment}|{line.lot_id}|{line.epc or ''}"
        return [
            Member(
                kind="shipment",
                key=key,
                shipment=line.shipment,
                order_id=line.order_id,
                customer_key=who,
                customer=line.customer,
                quantity=line.quantity,
                uom=line.uom,
                **common,
            ),
            Member(kind="customer", key=who, customer_key=who, customer=line.customer),
        ]
    place = line.location or UNKNOWN_PLACE
    return [
        Member(
            kind="place",
            key=f"{place}|{line.lot_id}",
            place=place,
            status=line.status,
            quantity=line.quantity,
            uom=line.uom,
            **common,
        )
    ]


def _summed(members: list[Member]) -> list[Member]:
    """Lines of one recall answer that are one member (a lot shipped twice under one
    document and unit) add up."""
    kept: dict[tuple[str, str], Member] = {}
    for m in members:
        seen = kept.get((m.kind, m.key))
        if seen is None:
            kept[(m.kind, m.key)] = m.model_copy()
        elif m.quantity is not None and m.uom == seen.uom:
            seen.quantity = (seen.quantity or 0.0) + m.quantity
    return list(kept.values())


async def _of_lot(
    conn: AsyncConnection, lot: trace.Lot
) -> tuple[list[Member], list[int], list[str]]:
    answer = await trace.recall(conn, lot)
    ids = await trace.reachable(conn, lot.lot_id, "forward")
    members = _summed([m for line in answer.lines for m in _line_members(line)])
    return members, ids, answer.gaps


def _merge(members: list[Member]) -> list[Member]:
    """One member per kind and key: a shipment line or place met in the recalls of two
    roots of a condition (a lot both reach) counts once. Sorted: the same every time."""
    kept: dict[tuple[str, str], Member] = {}
    for m in members:
        kept.setdefault((m.kind, m.key), m)
    return sorted(kept.values(), key=lambda m: (m.kind, m.key))


async def _lots(conn: AsyncConnection, ids: set[int]) -> list[Member]:
    cur = await conn.execute(_LOT_KEYS, (sorted(ids),))
    return [
        Member(kind="lot", key=str(lot_id), lot_id=lot_id, gtin=gtin, lot_code=code)
        for lot_id, gtin, code in await cur.fetchall()
    ]


async def of_lot(conn: AsyncConnection, lot: trace.Lot) -> AffectedSet:
    """What the recall of `lot` reaches now."""
    members, ids, gaps = await _of_lot(conn, lot)
    return AffectedSet(members=_merge(members + await _lots(conn, set(ids))), gaps=gaps)


async def of_condition(conn: AsyncConnection, condition: trace.Condition) -> AffectedSet:
    """What the recall by condition reaches now: its lots, and each lot's recall for the
    shipments and places (a lot already reached from an earlier one is not walked again)."""
    answer = await trace.recall_by_condition(conn, condition)
    members: list[Member] = []
    reached: set[int] = set()
    gaps = list(answer.gaps)
    for lot in sorted(answer.lots, key=lambda x: x.lot_id):
        if lot.lot_id in reached:
            continue
        found, ids, more = await _of_lot(conn, lot)
        members += found
        reached.update(ids)
        gaps += [g for g in more if g not in gaps]
    reached.update(x.lot_id for x in answer.lots)
    return AffectedSet(members=_merge(members + await _lots(conn, reached)), gaps=gaps)
