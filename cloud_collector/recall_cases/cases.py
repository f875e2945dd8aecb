"""Recall cases in the database: open, keep current, record what was done, close, read.

Every change is one transaction that locks the case's row first, so two people recording
on one case, or a recomputation running while someone closes it, happen one after the
other; a closed case refuses changes (`CaseClosed`) and is no longer recomputed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud_collector import holds, trace
from cloud_collector.recall_cases import affected
from cloud_collector.recall_cases.models import (
    FSMA_204_DEADLINE_S,
    Action,
    ActionKind,
    AffectedSet,
    Case,
    CaseRecord,
    CaseState,
    CustomerState,
    KeptMember,
    LotsHeld,
    PlaceState,
)

RECOMPUTED_BY = "recomputation"  # `by` of a 'refreshed' action: the case itself, on a read

_CASE_COLUMNS = """
c.case_id, c.title, c.drill, case when c.closed_at is null then 'open' else 'closed' end as state,
c.origin, c.origin_lot, l.gtin as origin_gtin, l.lot_code as origin_lot_code, c.condition,
c.opened_by, c.opened_at, c.checked_at, c.closed_at, c.closed_by, c.summary, c.gaps,
e.at as first_export_at, extract(epoch from e.at - c.opened_at)::float8 as time_to_export_s
"""
_CASES = f"""
select {_CASE_COLUMNS}
from recall_cases c left join lots l on l.lot_id = c.origin_lot
left join lateral (
    select min(a.at) as at from recall_case_actions a
    where a.case_id = c.case_id and a.kind = 'exported'
) e on true
where {{where}}
"""
_ONE = _CASES.format(where="c.case_id = %(case)s")
_LIST = (
    _CASES.format(
        where="""(%(state)s = 'all' or (c.closed_at is null) = (%(state)s = 'open'))
  and (%(drill)s::boolean is null or c.drill = %(drill)s)"""
    )
    + " order by c.opened_at desc, c.case_id desc limit %(limit)s"
)
_LOCK = "select closed_at is not null from recall_cases where case_id = %s for update"
_OPEN = """
insert into recall_cases (title, drill, origin, origin_lot, condition, opened_by, gaps)
values (%(title)s, %(drill)s, %(origin)s, %(lot)s, %(condition)s, %(by)s, %(gaps)s)
returning case_id
"""
# Members found now: new ones added (found now), known ones marked found again with the
# quantity the recall gives now. `xmax = 0`: the row was inserted, not updated.
_UPSERT_MEMBERS = """
insert into recall_case_members as m (
    case_id, kind, key, lot_id, gtin, lot_code, shipment, order_id, customer_key, customer,
    place, status, quantity, current_quantity, uom, at_opening)
select %(case)s, x.kind, x.key, x.lot_id, x.gtin, x.lot_code, x.shipment, x.order_id,
       x.customer_key, x.customer, x.place, x.status, x.quantity, x.quantity, x.uom, %(opening)s
from jsonb_to_recordset(%(members)s::jsonb) as x(
    kind text, key text, lot_id bigint, gtin text, lot_code text, shipment text,
    order_id text, customer_key text, customer text, place text, status text,
    quantity float8, uom text)
on conflict (case_id, kind, key) do update
    set current_quantity = excluded.current_quantity, in_current = true, checked_at = now()
returning kind, key, (xmax = 0) as added
"""
# Members the recall no longer finds (a correction removed a link): kept, marked.
_NOT_FOUND = """
update recall_case_members set in_current = false, current_quantity = null
where case_id = %s and in_current and checked_at < now()
returning kind, key
"""
_CHECKED = "update recall_cases set checked_at = now(), gaps = %s where case_id = %s"
_MEMBERS = """
select kind, key, lot_id, gtin, lot_code, shipment, order_id, customer_key, customer, place,
       status, quantity, current_quantity, uom, found_at, at_opening, in_current, checked_at
from recall_case_members where case_id = %s order by kind, key
"""
_MEMBER_KEYS = """
select key from recall_case_members where case_id = %s and kind = %s order by key limit 20
"""
_IS_MEMBER = "select 1 from recall_case_members where case_id = %s and kind = %s and key = %s"
_ACTION = """
insert into recall_case_actions (case_id, kind, by, happened_at, customer_key, place, lot_id,
                                 quantity, uom, method, contact, note, detail)
values (%(case)s, %(kind)s, %(by)s, %(happened_at)s, %(customer_key)s, %(place)s, %(lot_id)s,
        %(quantity)s, %(uom)s, %(method)s, %(contact)s, %(note)s, %(detail)s)
returning action_id
"""
_ACTIONS = """
select action_id, kind, at, by, happened_at, customer_key, place, lot_id, quantity, uom, method,
       contact, note, detail
from recall_case_actions where case_id = %s order by action_id
"""
_CLOSE = """
update recall_cases set closed_at = now(), closed_by = %s, summary = %s where case_id = %s
"""


class UnknownCase(Exception):
    pass


class CaseClosed(Exception):
    pass


class NotOfCase(ValueError):
    """A customer, place or lot named that the case does not hold."""


async def _rows(conn: AsyncConnection, sql: str, params: Any) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    return await (await cur.execute(sql, params)).fetchall()


async def _lock(conn: AsyncConnection, case_id: int, changing: bool = True) -> bool:
    """Lock the case's row for this transaction; whether it is closed. UnknownCase if there
    is no such case; CaseClosed if `changing` and it is closed."""
    row = await (await conn.execute(_LOCK, (case_id,))).fetchone()
    if row is None:
        raise UnknownCase(f"no recall case {case_id}: GET /api/v1/recall-cases lists them")
    if row[0] and changing:
        raise CaseClosed(
            f"recall case {case_id} is closed: it records nothing more (open a new case "
            "if the recall goes on)"
        )
    return bool(row[0])


async def _store(
    conn: AsyncConnection, case_id: int, found: AffectedSet, opening: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Store the set found now; what was added and what is no longer found."""
    members = Jsonb([m.model_dump() for m in found.members])
    params = {"case": case_id, "members": members, "opening": opening}
    rows = await _rows(conn, _UPSERT_MEMBERS, params)
    gone = await _rows(conn, _NOT_FOUND, (case_id,))
    await conn.execute(_CHECKED, (Jsonb(found.gaps), case_id))
    return [r for r in rows if r["added"]], gone


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        out[r["kind"]] += 1
    return dict(out)


# What an action records beside its kind, who and when (the export's columns too).
ACTION_FIELDS = (
    "happened_at",
    "customer_key",
    "place",
    "lot_id",
    "quantity",
    "uom",
    "method",
    "contact",
    "note",
)


async def _record(
    conn: AsyncConnection, case_id: int, kind: ActionKind, by: str, **fields: Any
) -> int:
    params = {
        "case": case_id,
        "kind": kind,
        "by": by,
        **{k: fields.get(k) for k in ACTION_FIELDS},
        "detail": Jsonb(fields.get("detail", {})),
    }
    row = await (await conn.execute(_ACTION, params)).fetchone()
    assert row is not None  # insert ... returning
    return int(row[0])


async def _affected_now(conn: AsyncConnection, case: dict[str, Any]) -> AffectedSet:
    if case["origin"] == "lot":
        return await affected.of_lot(conn, await trace.resolve(conn, str(case["origin_lot"])))
    return await affected.of_condition(conn, trace.Condition(**case["condition"]))


async def open_case(
    conn: AsyncConnection,
    title: str,
    by: str,
    lot: trace.Lot | None = None,
    condition: trace.Condition | None = None,
    drill: bool = False,
) -> int:
    """Open a case from a lot or a condition, freezing the set the recall gives now."""
    found = (
        await affected.of_lot(conn, lot)
        if lot is not None
        else await affected.of_condition(conn, condition)  # type: ignore[arg-type]
    )
    params = {
        "title": title,
        "drill": drill,
        "origin": "lot" if lot is not None else "condition",
        "lot": lot.lot_id if lot is not None else None,
        "condition": None
        if condition is None
        else Jsonb(condition.model_dump(mode="json", by_alias=True)),
        "by": by,
        "gaps": Jsonb(found.gaps),
    }
    async with conn.transaction():
        row = await (await conn.execute(_OPEN, params)).fetchone()
        assert row is not None  # insert ... returning
        case_id = int(row[0])
        added, _ = await _store(conn, case_id, found, opening=True)
        await _record(conn, case_id, "opened", by, detail={"members": _counts(added)})
    return case_id


async def refresh(conn: AsyncConnection, case_id: int) -> None:
    """Recompute an open case's set: members found since are added (with when), members no
    longer found are marked, never removed; a recomputation that changed something is an
    action of the case. A closed case is left as it was closed."""
    async with conn.transaction():
        if await _lock(conn, case_id, changing=False):
            return
        row = (await _rows(conn, _ONE, {"case": case_id}))[0]
        added, gone = await _store(conn, case_id, await _affected_now(conn, row), opening=False)
        if added or gone:
            detail = {
                "added": _counts(added),
                "no_longer_found": _counts(gone),
                "added_keys": [f"{r['kind']} {r['key']}" for r in added[:200]],
            }
            await _record(conn, case_id, "refreshed", RECOMPUTED_BY, detail=detail)


async def _require_member(conn: AsyncConnection, case_id: int, kind: str, key: str) -> None:
    if await (await conn.execute(_IS_MEMBER, (case_id, kind, key))).fetchone():
        return
    known = [r[0] for r in await (await conn.execute(_MEMBER_KEYS, (case_id, kind))).fetchall()]
    raise NotOfCase(
        f"recall case {case_id} has no {kind} {key!r}: "
        + (f"its {kind}s are {', '.join(map(repr, known))}" if known else f"it has no {kind}s")
        + (" (and more: GET the case)" if len(known) == 20 else "")
    )


async def record(
    conn: AsyncConnection,
    case_id: int,
    kind: ActionKind,
    by: str,
    customer_key: str | None = None,
    place: str | None = None,
    lot: trace.Lot | None = None,
    **fields: Any,
) -> int:
    """Record a notice, a return, or stock held or destroyed at a place. The customer,
    place and lot named must be the case's (NotOfCase otherwise)."""
    async with conn.transaction():
        await _lock(conn, case_id)
        if customer_key is not None:
            await _require_member(conn, case_id, "customer", customer_key)
        if place is not None:
            await _place_of_case(conn, case_id, place)
        if lot is not None:
            await _require_member(conn, case_id, "lot", str(lot.lot_id))
        lot_id = lot.lot_id if lot is not None else None
        return await _record(
            conn,
            case_id,
            kind,
            by,
            customer_key=customer_key,
            place=place,
            lot_id=lot_id,
            **fields,
        )


_IS_PLACE = "select 1 from recall_case_members where case_id = %s and kind = 'place' and place = %s"
_PLACES = """
select distinct place from recall_case_members where case_id = %s and kind = 'place'
order by place limit 20
"""


async def _place_of_case(conn: AsyncConnection, case_id: int, place: str) -> None:
    if await (await conn.execute(_IS_PLACE, (case_id, place))).fetchone():
        return
    known = [r[0] for r in await (await conn.execute(_PLACES, (case_id,))).fetchall()]
    raise NotOfCase(
        f"recall case {case_id} has no stock at place {place!r}: "
        + (f"its places are {', '.join(map(repr, known))}" if known else "it has no places")
    )


async def hold_lots(conn: AsyncConnection, case_id: int, reason: str, by: str) -> LotsHeld:
    """Put every lot the case holds now on hold (cloud_collector/holds.py), each with the
    case named in its reason; lots on hold already keep their holds."""
    async with conn.transaction():
        await _lock(conn, case_id)
        ids = [
            int(r["key"])
            for r in await _rows(conn, _MEMBERS, (case_id,))
            if r["kind"] == "lot" and r["in_current"]
        ]
        held, already = [], []
        for lot_id in ids:
            lot = await trace.resolve(conn, str(lot_id))
            try:
                await holds.hold(conn, lot, f"recall case {case_id}: {reason}", by)
                held.append(lot_id)
            except holds.AlreadyHeld:
                already.append(lot_id)
        detail = {"held": held, "already_held": already}
        await _record(conn, case_id, "lots_held", by, note=reason, detail=detail)
    return LotsHeld(held=held, already_held=already)


async def close(conn: AsyncConnection, case_id: int, summary: str, by: str) -> None:
    async with conn.transaction():
        await _lock(conn, case_id)
        await conn.execute(_CLOSE, (by, summary, case_id))
        await _record(conn, case_id, "closed", by, note=summary)


async def exported(conn: AsyncConnection, case_id: int, by: str, detail: dict[str, Any]) -> None:
    """Record a complete export of the case's record (a closed case's too: who took its
    record is part of it)."""
    async with conn.transaction():
        await _lock(conn, case_id, changing=False)
        await _record(conn, case_id, "exported", by, detail=detail)


def _case(row: dict[str, Any]) -> Case:
    seconds = row["time_to_export_s"]
    return Case(
        case_id=row["case_id"],
        title=row["title"],
        drill=row["drill"],
        state=row["state"],
        origin=row["origin"],
        lot_id=row["origin_lot"],
        gtin=row["origin_gtin"],
        lot_code=row["origin_lot_code"],
        condition=row["condition"],
        opened_by=row["opened_by"],
        opened_at=row["opened_at"],
        checked_at=row["checked_at"],
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
        summary=row["summary"],
        first_export_at=row["first_export_at"],
        time_to_export_s=seconds,
        within_24h=None if seconds is None else seconds <= FSMA_204_DEADLINE_S,
    )


async def cases(
    conn: AsyncConnection, state: CaseState = "all", drill: bool | None = None, limit: int = 1000
) -> list[Case]:
    """Cases, newest first."""
    params = {"state": state, "drill": drill, "limit": limit}
    return [_case(r) for r in await _rows(conn, _LIST, params)]


def _add(totals: dict[str, float], quantity: float | None, uom: str | None) -> None:
    if quantity is not None:
        totals[uom or ""] = totals.get(uom or "", 0.0) + quantity


def _customers(members: list[KeptMember], actions: list[Action]) -> list[CustomerState]:
    out: dict[str, CustomerState] = {}
    for m in members:
        if m.kind == "customer":
            out[m.key] = CustomerState(
                customer_key=m.key,
                customer=m.customer,
                shipments=[],
                shipped={},
                notified=False,
                last_notified_at=None,
                returned={},
                found_at=m.found_at,
                at_opening=m.at_opening,
            )
    for m in members:
        if m.kind == "shipment" and m.customer_key in out:
            c = out[m.customer_key]
            if m.shipment and m.shipment not in c.shipments:
                c.shipments.append(m.shipment)
            _add(c.shipped, m.quantity, m.uom)
    for a in actions:
        c2 = out.get(a.customer_key or "")
        if c2 is None:
            continue
        if a.kind == "notified":
            c2.notified = True
            if c2.last_notified_at is None or (
                a.happened_at and a.happened_at > c2.last_notified_at
            ):
                c2.last_notified_at = a.happened_at
        elif a.kind == "returned":
            _add(c2.returned, a.quantity, a.uom)
    return list(out.values())


def _places(members: list[KeptMember], actions: list[Action]) -> list[PlaceState]:
    out: dict[str, PlaceState] = {}
    for m in members:
        if m.kind != "place" or m.place is None:
            continue
        p = out.setdefault(
            m.place,
            PlaceState(place=m.place, lots=[], on_hand={}, current={}, held={}, destroyed={}),
        )
        if m.lot_code and m.lot_code not in p.lots:
            p.lots.append(m.lot_code)
        _add(p.on_hand, m.quantity, m.uom)
        _add(p.current, m.current_quantity, m.uom)
    for a in actions:
        p2 = out.get(a.place or "")
        if p2 is not None and a.kind in ("held", "destroyed"):
            _add(p2.held if a.kind == "held" else p2.destroyed, a.quantity, a.uom)
    return list(out.values())


async def case_record(conn: AsyncConnection, case_id: int) -> CaseRecord:
    """The case as it stands (UnknownCase if there is none)."""
    rows = await _rows(conn, _ONE, {"case": case_id})
    if not rows:
        raise UnknownCase(f"no recall case {case_id}: GET /api/v1/recall-cases lists them")
    members = [KeptMember(**r) for r in await _rows(conn, _MEMBERS, (case_id,))]
    actions = [Action(**r) for r in await _rows(conn, _ACTIONS, (case_id,))]
    return CaseRecord(
        case=_case(rows[0]),
        members=members,
        customers=_customers(members, actions),
        places=_places(members, actions),
        added_since_opening=sorted(
            (m for m in members if not m.at_opening), key=lambda m: (m.found_at, m.kind, m.key)
        ),
        no_longer_found=[m for m in members if not m.in_current],
        gaps=rows[0]["gaps"],
        actions=actions,
    )


def case_lot_ids(record: CaseRecord) -> list[int]:
    """Every lot the case ever held (a lot no longer found stays in its exports)."""
    return [m.lot_id for m in record.members if m.kind == "lot" and m.lot_id is not None]
