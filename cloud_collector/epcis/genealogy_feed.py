"""Captured EPCIS events into the lot genealogy, through the same projection as our own
edges' events (cloud_collector/genealogy.py): a partner's TransformationEvent links its
input lots to its output lots; a receiving or shipping ObjectEvent records a receipt or a
shipment line. Other events (aggregation, association, transaction, other bizSteps) are
stored and queryable but make no genealogy link.

A partner's events are its own word, held to its own goods:

- its batch ids (transformationIDs) live in a namespace of its own, `partner:<id>:<id as
  sent>`, so they never meet ours; an output lot or unit of ours is refused
  (NotThePartners, 403);
- it may receive, ship or use only lots and units we shipped to it (auth.
  SHIPPED_TO_PARTNER_SQL) or that are its own (its batches made them, or no one but it
  named them), in quantities no larger than we shipped to it (403 naming the lot and the
  quantities);
- its outputs are products of its own GS1 company prefix (the prefix of its GLN and SGLN
  locations, in any form) or products we do not know;
- its events are dated no later than CLOCK_SKEW ahead of our clock;
- its events never change our stock: their lines do not count in the quantities and last
  place of our lots (recount_lots, migration 0019), and its labels never re-tie our units.

Its shipping events go into the forward trace (a distributor shipping on to its customers)
but, kept as the partner's (trace_events.partner_id), never make a lot visible to it.

A partner's identifiers do not always fit our edge contract (a Digital Link read point, a
lot code longer than GS1's 20 characters): what does not fit is carried as the item's raw
text, never refused (the event is valid EPCIS and is stored whatever the genealogy makes
of it)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, get_args

from psycopg import AsyncConnection

from cloud_collector import auth, genealogy, stock
from cloud_collector.epcis.document import InvalidDocument, parse_time
from cloud_collector.epcis.identifiers import cbv_word, keys
from protocols import gs1
from protocols.mqtt.contract import (
    BizStep,
    BizTransaction,
    Disposition,
    Item,
    ObjectEventRecord,
    TransformationEventRecord,
)

# batches.edge_id of a batch only a captured event told us about: "epcis" (our own systems,
# an importer key) or "epcis:{partner_id}" (a partner's).
CAPTURED_EDGE = "epcis"
# Of the lots (gtin, lot code) a partner's TransformationEvent outputs, the first that is
# not the partner's to make: a lot of a batch that is not its own, or one that is not a mere
# placeholder only its own events named (a lot we made or received, another's lot).
_NOT_ITS_LOT = """
select l.gtin, l.lot_code from lots l
join unnest(%(gtins)s::text[], %(lots)s::text[]) o(gtin, lot_code) using (gtin, lot_code)
where not exists (select 1 from batches b where b.batch_id = l.batch_id and b.edge_id = %(edge)s)
  and (l.batch_id is not null or l.origin <> 'unknown' or exists (
      select 1 from event_items i join trace_events t using (event_id)
      where i.gtin = l.gtin and i.lot = l.lot_code
        and t.partner_id is distinct from %(partner)s))
limit 1
"""
# Of the units (SSCC, SGTIN, other EPC) it outputs, the first that is someone else's: tied
# to a lot not of one of its batches, or tied to none yet but seen by others' events (a
# pallet we received by its tag alone): the genealogy would move it into the partner's lot.
_NOT_ITS_UNIT = """
select coalesce(u.sscc, u.epc) from units u left join lots l on l.lot_id = u.lot_id
where (u.sscc = any(%(ssccs)s) or u.epc = any(%(epcs)s) or (u.gtin, u.serial) in (
        select * from unnest(%(gtins)s::text[], %(serials)s::text[])))
  and case when l.lot_id is null then exists (
          select 1 from lot_locations x join trace_events t using (event_id)
          where x.epc = u.epc and t.partner_id is distinct from %(partner)s)
      else not exists (
          select 1 from batches b where b.batch_id = l.batch_id and b.edge_id = %(edge)s)
      end
limit 1
"""


# How far ahead of our clock a partner's event may be dated (its clock may run fast).
CLOCK_SKEW = timedelta(minutes=5)

# Of the lots an event names (gtin + lot code) or holds (units), those that are not the
# partner's own: made by one of our batches or another's, or named by anyone's events but
# its own, or known to the ERP. Each with what we shipped to the partner of it and what
# the partner's earlier events already received, shipped or used of it, per unit.
_OTHERS_GOODS = """
with named as (
    select l.lot_id from lots l
    join unnest(%(gtins)s::text[], %(lots)s::text[]) n(gtin, lot_code) using (gtin, lot_code)
    union
    select u.lot_id from units u
    where u.lot_id is not null and (u.epc = any(%(units)s) or u.sscc = any(%(ssccs)s))
), others as (
    select l.lot_id, l.gtin, l.lot_code from named join lots l using (lot_id)
    where not exists (select 1 from batches b where b.batch_id = l.batch_id
                      and b.edge_id = %(edge)s)
      and (l.batch_id is not null or l.origin <> 'unknown' or l.supplier is not null
           or exists (select 1 from event_items i join trace_events t using (event_id)
                      where i.gtin = l.gtin and i.lot = l.lot_code
                        and t.partner_id is distinct from %(partner)s))
), shipped as (
    select sl.lot_id, coalesce(sl.uom, '') as uom, sum(sl.quantity) as quantity
    from shipment_lines sl join others using (lot_id)
    where (sl.event_id, sl.lot_id) in ({shipped_to_partner})
    group by sl.lot_id, coalesce(sl.uom, '')
), used as (
    select x.lot_id, x.side, coalesce(x.uom, '') as uom, sum(x.quantity) as quantity
    from (select r.lot_id, 'received' as side, r.uom, r.quantity, r.event_id from receipts r
          union all
          select s.lot_id, 'moved', s.uom, s.quantity, s.event_id from shipment_lines s
          union all
          select b.lot_id, 'moved', nullif(b.uom, ''), b.quantity, b.event_id
          from batch_inputs b) x
    join others using (lot_id) join trace_events t on t.event_id = x.event_id
    where t.partner_id = %(partner)s
    group by x.lot_id, x.side, coalesce(x.uom, '')
)
select o.lot_id, o.gtin, o.lot_code,
       coalesce((select jsonb_object_agg(uom, quantity) from shipped s
                 where s.lot_id = o.lot_id), '{{}}') as shipped,
       coalesce((select jsonb_object_agg(side || ' ' || uom, quantity) from used u
                 where u.lot_id = o.lot_id), '{{}}') as used,
       exists (select 1 from shipped s where s.lot_id = o.lot_id) as shipped_to_it
from others o order by o.lot_id
""".format(shipped_to_partner=auth.SHIPPED_TO_PARTNER_SQL.replace("%(partner_id)s", "%(partner)s"))
# Of the units an event holds, those of someone else's lot we never shipped to the partner.
_OTHERS_UNITS = """
select coalesce(u.sscc, u.epc) from units u
where (u.epc = any(%(units)s) or u.sscc = any(%(ssccs)s)) and u.lot_id = any(%(lots)s)
  and not exists (
      select 1 from shipment_lines sl
      where sl.epc = u.epc and (sl.event_id, sl.lot_id) in ({shipped_to_partner}))
limit 1
""".format(shipped_to_partner=auth.SHIPPED_TO_PARTNER_SQL.replace("%(partner_id)s", "%(partner)s"))
# Products we know: master data not the partner's own, or a lot not of its batches.
_KNOWN_PRODUCTS = """
select g from unnest(%(gtins)s::text[]) g
where exists (select 1 from products p where p.gtin = g
              and p.partner_id is distinct from %(partner)s)
   or exists (select 1 from lots l where l.gtin = g and (l.batch_id is null or not exists (
       select 1 from batches b where b.batch_id = l.batch_id and b.edge_id = %(edge)s)))
limit 1
"""


class NotThePartners(Exception):
    """A partner's TransformationEvent names a batch, or outputs a lot, that is not the
    partner's (HTTP 403)."""


_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9._:\-]")
_TRANSACTION_TYPES = set(get_args(BizTransaction.model_fields["type"].annotation))


def _identifier(value: str | None) -> str | None:
    """A location id as our contract spells identifiers (a Digital Link has slashes), only
    to pass the contract's checks: the record then gets the id as captured (_as_captured)."""
    if not value:
        return None
    return _NOT_IDENTIFIER.sub("_", value)[:128]


def _location(event: dict[str, Any], field: str) -> str | None:
    value = (event.get(field) or {}).get("id")
    return str(value) if value else None


def _item(identifier: str, quantity: dict[str, Any] | None = None) -> Item:
    k = keys(identifier)
    lot = k.lot if k.lot and len(k.lot) <= 20 else None
    serial = k.serial if k.serial and len(k.serial) <= 20 else None
    uri = identifier[:500]
    return Item(
        epc=None if quantity else uri,
        epc_class=uri if quantity else None,
        quantity=quantity.get("quantity")
        if quantity and quantity.get("quantity", 0) >= 0
        else None,
        uom=(quantity.get("uom") or None) if quantity else None,
        gtin=k.gtin,
        lot=lot,
        serial=serial,
        sscc=k.sscc,
        raw=uri,
    )


# ILMD terms that give a lot's expiry (CBV master data attributes, as ILMD carries them).
EXPIRY_TERMS = ("itemExpirationDate", "bestBeforeDate", "sellByDate")


def _expiry(event: dict[str, Any]) -> date | None:
    """The expiry an event's ILMD gives its lots (the first of EXPIRY_TERMS it carries, by
    whatever prefix); a value that is not a date is ignored here (the event is valid EPCIS
    all the same) and stays in the event as captured."""
    ilmd = event.get("ilmd")
    if not isinstance(ilmd, dict):
        return None
    found = {str(k).rpartition(":")[2].rpartition("#")[2]: v for k, v in ilmd.items()}
    for term in EXPIRY_TERMS:
        value = found.get(term)
        if isinstance(value, str):
            try:
                return date.fromisoformat(value[:10])
            except ValueError:
                return None
    return None


def _items(event: dict[str, Any], epcs: str, quantities: str) -> list[Item]:
    found = [_item(epc) for epc in event.get(epcs, [])]
    found += [_item(q["epcClass"], q) for q in event.get(quantities, [])]
    return found


_PARTNER_LOCATIONS = "select location from partner_locations where partner_id = %s"
# What the refusals say of a partner none of whose locations gives a company prefix.
NO_PREFIX_KNOWN = "none known: no GLN or SGLN location of a known prefix"


def _company_prefix(location: str) -> str | None:
    """The company prefix of a partner location that names a GLN or SGLN, in whichever form
    auth reads a location in (URN, Digital Link with or without host, bare GLN)."""
    return gs1.company_prefix(location) if auth.location_gln(location) else None


def partner_batch(partner: str, transformation_id: str) -> str:
    """Where a partner's batch ids live: never one of ours, never another partner's."""
    return f"{genealogy.PARTNER_BATCHES}{partner}:{transformation_id}"


async def project(
    conn: AsyncConnection, event_id: str, event: dict[str, Any], partner: str | None
) -> None:
    """Project one captured event; `partner` is the capturing partner's id, if any."""
    time = parse_time(event["eventTime"], "eventTime")
    if partner is not None and time > datetime.now(UTC) + CLOCK_SKEW:
        raise InvalidDocument(
            f"$ (event {event_id}).eventTime",
            f"{event['eventTime']} is more than {CLOCK_SKEW} ahead of our clock: an event "
            "cannot have happened yet (check the sending system's clock and time zone)",
        )
    edge = f"{CAPTURED_EDGE}:{partner}" if partner else CAPTURED_EDGE
    if event["type"] == "TransformationEvent":
        await _transformation(conn, event_id, event, time, edge, partner)
    elif event["type"] == "ObjectEvent":
        await _object_event(conn, event_id, event, time, edge, partner)


def _unit_keys(items: list[Item]) -> list[str]:
    return [k for i in items if i.lot is None and (k := genealogy.unit_key(i)) is not None]


async def _only_goods_shipped_to_it(
    conn: AsyncConnection, items: list[Item], edge: str, partner: str, side: str
) -> None:
    """A partner receives, ships or uses (`side`: received, moved) only goods we shipped to
    it or its own, and no more of a lot of ours than we shipped to it (per unit of measure,
    with what its earlier events already received or moved)."""
    named = [i for i in items if i.lot is not None]
    params = {
        "gtins": [i.gtin or "" for i in named],
        "lots": [i.lot for i in named],
        "units": _unit_keys(items),
        "ssccs": [i.sscc for i in items if i.sscc],
        "edge": edge,
        "partner": partner,
    }
    cur = await conn.execute(_OTHERS_GOODS, params)  # type: ignore[arg-type]
    others = await cur.fetchall()
    verb = {"received": "receives", "moved": "ships or uses"}[side]
    for _, gtin, lot, shipped, used, shipped_to_it in others:
        if not shipped_to_it:
            raise NotThePartners(
                f"lot {lot!r} of GTIN {gtin or '(none)'} was never shipped to partner "
                f"{partner!r}: a partner's events receive, ship or use only goods shipped to it "
                "or its own"
            )
        here: dict[str, float] = {}
        for i in named:
            if (i.gtin or "", i.lot) == (gtin, lot) and i.quantity is not None:
                here[i.uom or ""] = here.get(i.uom or "", 0.0) + i.quantity
        for uom, quantity in here.items():
            before, limit = used.get(f"{side} {uom}", 0.0), shipped.get(uom, 0.0)
            if before + quantity > limit * (1 + 1e-9):
                unit = f" {uom}" if uom else ""
                raise NotThePartners(
                    f"lot {lot!r} of GTIN {gtin or '(none)'}: partner {partner!r} {verb} "
                    f"{quantity:g}{unit} here and {before:g}{unit} before, more than the "
                    f"{limit:g}{unit} shipped to it"
                )
    if others and (params["units"] or params["ssccs"]):
        unit_params = {**params, "lots": [row[0] for row in others]}
        row = await (await conn.execute(_OTHERS_UNITS, unit_params)).fetchone()  # type: ignore[arg-type]
        if row is not None:
            raise NotThePartners(
                f"unit {row[0]!r} was never shipped to partner {partner!r}: a partner's events "
                "receive, ship or use only units shipped to it or its own"
            )


async def product_not_its_own(
    conn: AsyncConnection, gtins: list[str], partner: str
) -> tuple[str, list[str]] | None:
    """Of the GTINs a partner names as its products (outputs, master data), the first that
    is neither of its company prefixes (those of its GLN and SGLN locations) nor unknown to
    us, and its prefixes; None when all are its to name."""
    cur = await conn.execute(_PARTNER_LOCATIONS, (partner,))
    prefixes = [p for (loc,) in await cur.fetchall() if (p := _company_prefix(loc))]
    foreign = sorted({g for g in gtins if not any(g[1 : 1 + len(p)] == p for p in prefixes)})
    if not foreign:
        return None
    params = {"gtins": foreign, "edge": f"{CAPTURED_EDGE}:{partner}", "partner": partner}
    row = await (await conn.execute(_KNOWN_PRODUCTS, params)).fetchone()
    return (str(row[0]), prefixes) if row is not None else None


async def _only_its_own_products(conn: AsyncConnection, outputs: list[Item], partner: str) -> None:
    """A partner makes products of its own company prefix, or products we do not know:
    never one of ours or another's we know."""
    found = await product_not_its_own(conn, [i.gtin for i in outputs if i.gtin], partner)
    if found is not None:
        gtin, prefixes = found
        raise NotThePartners(
            f"GTIN {gtin} is a product we know, not of partner {partner!r}'s company prefix "
            f"({', '.join(prefixes) or NO_PREFIX_KNOWN}): a partner's TransformationEvent "
            "makes only products of its own"
        )


async def _transformation(
    conn: AsyncConnection,
    event_id: str,
    event: dict[str, Any],
    time: datetime,
    edge: str,
    partner: str | None,
) -> None:
    where = (event.get("bizLocation") or event.get("readPoint") or {}).get("id")
    step = cbv_word("bizStep", event.get("bizStep"))
    batch = event.get("transformationID") or event_id
    outputs = _items(event, "outputEPCList", "outputQuantityList")
    inputs = _items(event, "inputEPCList", "inputQuantityList")
    if partner is not None:
        batch = partner_batch(partner, batch)
        await _only_its_own_outputs(conn, outputs, edge, partner)
        await _only_its_own_products(conn, outputs, partner)
        await _only_goods_shipped_to_it(conn, inputs, edge, partner, "moved")
    checked = TransformationEventRecord.model_validate(
        {
            "seq": 0,
            "time": time,
            "event_id": event_id,
            "transformation_id": batch,
            "biz_step": step if step in get_args(BizStep) else "commissioning",
            "read_point": _identifier((event.get("readPoint") or {}).get("id")) or "partner",
            "line": _identifier(where) or "partner",
            "batch": batch,
            "inputs": inputs,
            "outputs": outputs,
        }
    )
    # The genealogy stores locations as text: give it the partner's ids as they were sent.
    record = checked.model_copy(
        update={
            "read_point": _location(event, "readPoint") or "partner",
            "line": where or "partner",
        }
    )
    try:
        await genealogy.project_transformation(conn, record, edge, partner=partner)
    except (genealogy.TransformationTooWide, genealogy.ReservedBatchId) as err:
        raise InvalidDocument(f"$ (event {event_id})", str(err)) from err


async def _only_its_own_outputs(
    conn: AsyncConnection, outputs: list[Item], edge: str, partner: str
) -> None:
    """A partner's batch makes only lots and units of its own: naming a lot of ours (or
    another partner's) as an output would write the partner's inputs into that lot's
    ancestry; naming a unit of ours would move it into the partner's lot."""
    lots = [item for item in outputs if item.lot is not None]
    units = [item for item in outputs if item.lot is None]
    if lots:
        params = {
            "gtins": [item.gtin or "" for item in lots],
            "lots": [item.lot for item in lots],
            "edge": edge,
            "partner": partner,
        }
        if row := await (await conn.execute(_NOT_ITS_LOT, params)).fetchone():
            raise NotThePartners(
                f"output lot {row[1]!r} of GTIN {row[0]} is not this partner's: a partner's "
                "TransformationEvent outputs only lots it makes (give its products lots of "
                "their own)"
            )
    serialised = [item for item in units if item.gtin and item.serial]
    if units:
        params = {
            "ssccs": [item.sscc for item in units if item.sscc],
            "epcs": [item.epc for item in units if item.epc],
            "gtins": [item.gtin for item in serialised],
            "serials": [item.serial for item in serialised],
            "edge": edge,
            "partner": partner,
        }
        if row := await (await conn.execute(_NOT_ITS_UNIT, params)).fetchone():
            raise NotThePartners(
                f"output {row[0]!r} is a unit of a lot that is not this partner's: a partner's "
                "TransformationEvent outputs only units it makes"
            )


async def _object_event(
    conn: AsyncConnection,
    event_id: str,
    event: dict[str, Any],
    time: datetime,
    edge: str,
    partner: str | None,
) -> None:
    step = cbv_word("bizStep", event.get("bizStep"))
    warehouse = partner is None and step in stock.OBJECT_STEPS
    if step not in ("receiving", "shipping") and not warehouse:
        return
    items = _items(event, "epcList", "quantityList")
    if not items:
        return
    if (expiry := _expiry(event)) is not None:
        items = [i.model_copy(update={"expiry": expiry}) if i.lot else i for i in items]
    if partner is not None:
        side = "received" if step == "receiving" else "moved"
        await _only_goods_shipped_to_it(conn, items[:10_000], edge, partner, side)
    disposition = cbv_word("disposition", event.get("disposition"))
    transactions = []
    for t in event.get("bizTransactionList", []):
        kind = cbv_word("bizTransactionType", t.get("type"))
        if kind in _TRANSACTION_TYPES:
            transactions.append({"type": kind, "id": t["bizTransaction"][:128]})
    checked = ObjectEventRecord.model_validate(
        {
            "seq": 0,
            "time": time,
            "event_id": event_id,
            "action": event["action"],
            "biz_step": step,
            "disposition": disposition if disposition in get_args(Disposition) else None,
            "read_point": _identifier((event.get("readPoint") or {}).get("id")) or "partner",
            "biz_location": _identifier((event.get("bizLocation") or {}).get("id")),
            "items": items[:10_000],
            "biz_transactions": transactions,
        }
    )
    record = checked.model_copy(
        update={
            "read_point": _location(event, "readPoint") or "partner",
            "biz_location": _location(event, "bizLocation"),
        }
    )
    await genealogy.project_object_event(conn, record, partner=partner)
