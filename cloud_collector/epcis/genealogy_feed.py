"""Captured EPCIS events into the lot genealogy, through the same projection as our own
edges' events (cloud_collector/genealogy.py): a partner's TransformationEvent links its
input lots to its output lots; a receiving or shipping ObjectEvent records a receipt or a
shipment line. Other events (aggregation, association, transaction, other bizSteps) are
stored and queryable but make no genealogy link.

A partner's events are its own word: its batches are its own (a transformationID or an
output lot or unit of ours is refused, NotThePartners); its shipping events go into the
forward trace (a distributor shipping on to its customers) but, kept as the partner's
(trace_events.partner_id), never make a lot visible to it (auth.SHIPPED_TO_PARTNER_SQL).

A partner's identifiers do not always fit our edge contract (a Digital Link read point, a
lot code longer than GS1's 20 characters): what does not fit is carried as the item's raw
text, never refused (the event is valid EPCIS and is stored whatever the genealogy makes
of it)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, get_args

from psycopg import AsyncConnection

from cloud_collector import genealogy
from cloud_collector.epcis.document import InvalidDocument, parse_time
from cloud_collector.epcis.identifiers import cbv_word, keys
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
_BATCH_OWNER = "select edge_id from batches where batch_id = %s"
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


def _items(event: dict[str, Any], epcs: str, quantities: str) -> list[Item]:
    found = [_item(epc) for epc in event.get(epcs, [])]
    found += [_item(q["epcClass"], q) for q in event.get(quantities, [])]
    return found


async def project(
    conn: AsyncConnection, event_id: str, event: dict[str, Any], partner: str | None
) -> None:
    """Project one captured event; `partner` is the capturing partner's id, if any."""
    time = parse_time(event["eventTime"], "eventTime")
    if event["type"] == "TransformationEvent":
        edge = f"{CAPTURED_EDGE}:{partner}" if partner else CAPTURED_EDGE
        await _transformation(conn, event_id, event, time, edge, partner)
    elif event["type"] == "ObjectEvent":
        await _object_event(conn, event_id, event, time)


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
    if partner is not None:
        row = await (await conn.execute(_BATCH_OWNER, (batch,))).fetchone()
        if row is not None and row[0] != edge:
            raise NotThePartners(
                f"transformationID {batch!r} names a batch that is not this partner's: "
                "use an id of your own (e.g. a URI under your domain)"
            )
        await _only_its_own_outputs(conn, outputs, edge, partner)
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
            "inputs": _items(event, "inputEPCList", "inputQuantityList"),
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
        await genealogy.project_transformation(conn, record, edge)
    except genealogy.TransformationTooWide as err:
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
    conn: AsyncConnection, event_id: str, event: dict[str, Any], time: datetime
) -> None:
    step = cbv_word("bizStep", event.get("bizStep"))
    if step not in ("receiving", "shipping"):
        return
    items = _items(event, "epcList", "quantityList")
    if not items:
        return
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
    await genealogy.project_object_event(conn, record)
