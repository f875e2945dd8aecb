"""Captured EPCIS events into trace_events / event_items / event_documents, the capture job
beside them and the genealogy fed, all in one transaction: a document is stored whole or
not at all. An event whose eventID is already stored changes nothing (a re-capture), except
that an error declaration for it is recorded on it (EPCIS 2.0 section 7.4.1.2: the declaration
repeats the erroneous event with the same eventID and an errorDeclaration added)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, ValidationError

from cloud_collector.auth import Principal
from cloud_collector.epcis import genealogy_feed, master_data, parties
from cloud_collector.epcis.document import InvalidDocument, parse_time
from cloud_collector.epcis.identifiers import cbv_word, keys

_INSERT_EVENT = """
insert into trace_events (event_id, event_type, event_time, action, biz_step, disposition,
    read_point, biz_location, batch_id, biz_transactions, body, body_format, epcis_context,
    capture_id, partner_id)
values (%(event_id)s, %(event_type)s, %(event_time)s, %(action)s, %(biz_step)s,
    %(disposition)s, %(read_point)s, %(biz_location)s, %(batch_id)s, %(biz_transactions)s,
    %(body)s, 'epcis', %(context)s, %(capture_id)s, %(partner)s)
on conflict (event_id) do update set body = excluded.body, epcis_context = excluded.epcis_context
    where trace_events.body_format = 'epcis'
      and excluded.body ? 'errorDeclaration' and not trace_events.body ? 'errorDeclaration'
      and (%(partner)s::text is null or trace_events.partner_id = %(partner)s)
returning (xmax = 0) as inserted
"""
# Stored events a partner's error declarations name but did not capture.
_DECLARED_BY_OTHERS = """
select event_id from trace_events
where event_id = any(%s) and partner_id is distinct from %s limit 1
"""
_INSERT_ITEM = """
insert into event_items (event_id, role, position, epc, epc_class, quantity, uom, gtin, lot,
    serial, sscc, raw)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
_INSERT_DOCUMENT = """
insert into event_documents (event_id, type, id) values (%s, %s, %s) on conflict do nothing
"""
_INSERT_JOB = """
insert into epcis_capture_jobs (capture_id, created_at, finished_at, captured_by, partner_id)
values (%s, %s, now(), %s, %s)
"""
_JOB = """
select capture_id, created_at, finished_at from epcis_capture_jobs
where capture_id = %s and (%s::text is null or partner_id = %s)
"""

# Where each EPCIS list goes in event_items: (field, role, holds instances or quantities).
ITEM_LISTS: list[tuple[str, str, str]] = [
    ("epcList", "observed", "epc"),
    ("quantityList", "observed", "quantity"),
    ("parentID", "parent", "epc"),
    ("childEPCs", "child", "epc"),
    ("childQuantityList", "child", "quantity"),
    ("inputEPCList", "input", "epc"),
    ("inputQuantityList", "input", "quantity"),
    ("outputEPCList", "output", "epc"),
    ("outputQuantityList", "output", "quantity"),
]


class CaptureJob(BaseModel):
    """The REST binding's capture job (its field names). A job is stored only for a document
    accepted and committed whole, so it is finished, successful and without errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    captureID: str
    createdAt: str
    finishedAt: str | None
    running: bool = False
    success: bool = True
    captureErrorBehaviour: Literal["rollback", "proceed"] = "rollback"
    errors: list[Any] = []


def item_rows(event_id: str, event: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    positions: dict[str, int] = {}
    for field, role, holds in ITEM_LISTS:
        values = event.get(field)
        if values is None:
            continue
        for value in values if isinstance(values, list) else [values]:
            position = positions.get(role, 0)
            positions[role] = position + 1
            if holds == "epc":
                k = keys(value)
                rows.append(
                    (event_id, role, position, value, None, None, None, k.gtin, k.lot,
                     k.serial, k.sscc, None)
                )  # fmt: skip
            else:
                k = keys(value["epcClass"])
                rows.append(
                    (event_id, role, position, None, value["epcClass"], value.get("quantity"),
                     value.get("uom"), k.gtin, k.lot, None, None, None)
                )  # fmt: skip
    return rows


def _columns(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    transactions = [
        {"type": cbv_word("bizTransactionType", t.get("type")), "id": t["bizTransaction"]}
        for t in event.get("bizTransactionList", [])
    ]
    batch = None
    if event["type"] == "TransformationEvent":
        batch = event.get("transformationID") or event_id
    return {
        "event_id": event_id,
        "event_type": event["type"],
        "event_time": parse_time(event["eventTime"], "eventTime"),
        "action": event.get("action"),
        "biz_step": cbv_word("bizStep", event.get("bizStep")),
        "disposition": cbv_word("disposition", event.get("disposition")),
        "read_point": (event.get("readPoint") or {}).get("id"),
        "biz_location": (event.get("bizLocation") or {}).get("id"),
        "batch_id": batch,
        "biz_transactions": Jsonb(transactions),
        "body": Jsonb(event),
    }


async def capture(
    conn: AsyncConnection,
    events: list[dict[str, Any]],
    ids: list[str],
    namespaces: dict[str, Any],
    created_at: datetime,
    principal: Principal,
    vocabulary: list[master_data.Element] | None = None,
) -> str:
    """Store the events (ids: eventID or hash, in order) and the header's master data
    (`vocabulary`, from master_data.elements), and return the capture job's id. The caller
    holds the transaction."""
    capture_id = uuid.uuid4().hex
    partner = principal.partner_id
    declared = [i for event, i in zip(events, ids, strict=True) if "errorDeclaration" in event]
    if partner is not None and declared:
        cur = await conn.execute(_DECLARED_BY_OTHERS, (declared, partner))
        if row := await cur.fetchone():
            raise genealogy_feed.NotThePartners(
                f"event {row[0]!r} was not captured by this partner: a partner declares errors "
                "only in events it captured (ask whoever captured it to declare the error)"
            )
    columns = [
        {
            **_columns(event, event_id),
            "context": Jsonb(namespaces),
            "capture_id": capture_id,
            # Who captured it: a partner declares errors only in events it captured, and its
            # events never make a lot visible to it (auth.VISIBLE_LOTS_SQL).
            "partner": partner,
        }
        for event, event_id in zip(events, ids, strict=True)
    ]
    new: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (columns, event) stored now
    async with conn.cursor() as cur:
        # One pipelined round of inserts; each returns a row only if it stored the event
        # (not when the id was captured before, or an error declaration was recorded on it).
        await cur.executemany(_INSERT_EVENT, columns, returning=True)
        for row_columns, event in zip(columns, events, strict=True):
            row = await cur.fetchone()
            if row is not None and row[0]:
                new.append((row_columns, event))
            cur.nextset()
        items = [r for c, event in new for r in item_rows(c["event_id"], event)]
        await cur.executemany(_INSERT_ITEM, items)
        documents = [
            (c["event_id"], t["type"] or "", t["id"]) for c, _ in new
            for t in c["biz_transactions"].obj
        ]  # fmt: skip
        await cur.executemany(_INSERT_DOCUMENT, documents)
        found = [r for c, event in new for r in parties.rows(c["event_id"], event)]
        await cur.executemany(parties.INSERT, found)
    position = {id(event): i for i, event in enumerate(events)}
    async with conn.pipeline():  # statements whose results nobody reads need no round trip
        for c, event in new:  # in document order: a receipt before the batch that uses it
            try:
                await genealogy_feed.project(conn, c["event_id"], event, partner)
            except ValidationError as err:
                first = err.errors()[0]
                raise InvalidDocument(
                    f"$.epcisBody.eventList[{position[id(event)]}]",
                    "cannot be linked into the lot genealogy: "
                    f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}",
                ) from err
    await conn.execute(_INSERT_JOB, (capture_id, created_at, principal.name, partner))
    await master_data.store(conn, vocabulary or [], namespaces, capture_id, partner)
    return capture_id


async def job(conn: AsyncConnection, capture_id: str, partner: str | None) -> CaptureJob | None:
    """The job; a partner sees only its own."""
    row = await (await conn.execute(_JOB, (capture_id, partner, partner))).fetchone()
    if row is None:
        return None
    return CaptureJob(
        captureID=row[0],
        createdAt=_iso(row[1]),
        finishedAt=_iso(row[2]) if row[2] else None,
    )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
