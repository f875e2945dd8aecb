"""Captured EPCIS events into the lot genealogy, through the same projection as our own
edges' events (cloud_collector/genealogy.py): a partner's TransformationEvent links its
input lots to its output lots; a receiving or shipping ObjectEvent records a receipt or a
shipment line. Other events (aggregation, association, transaction, other bizSteps) are
stored and queryable but make no genealogy link.

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
from cloud_collector.epcis.document import parse_time
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


class ForeignBatch(Exception):
    """A partner's TransformationEvent names a batch that is not the partner's."""


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
        await _transformation(conn, event_id, event, time, edge, partner is not None)
    elif event["type"] == "ObjectEvent":
        await _object_event(conn, event_id, event, time)


async def _transformation(
    conn: AsyncConnection,
    event_id: str,
    event: dict[str, Any],
    time: datetime,
    edge: str,
    partner: bool,
) -> None:
    where = (event.get("bizLocation") or event.get("readPoint") or {}).get("id")
    step = cbv_word("bizStep", event.get("bizStep"))
    batch = event.get("transformationID") or event_id
    if partner:
        row = await (await conn.execute(_BATCH_OWNER, (batch,))).fetchone()
        if row is not None and row[0] != edge:
            raise ForeignBatch(
                f"transformationID {batch!r} names a batch that is not this partner's: "
                "use an id of your own (e.g. a URI under your domain)"
            )
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
            "outputs": _items(event, "outputEPCList", "outputQuantityList"),
        }
    )
    # The genealogy stores locations as text: give it the partner's ids as they were sent.
    record = checked.model_copy(
        update={
            "read_point": _location(event, "readPoint") or "partner",
            "line": where or "partner",
        }
    )
    await genealogy.project_transformation(conn, record, edge)


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
