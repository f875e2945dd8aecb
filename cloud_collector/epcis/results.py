"""A query's page of events as an EPCISQueryDocument: captured and own events alike, own
batches with their readings summarised (one grouped statement for the whole page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from cloud_collector.epcis import render
from cloud_collector.epcis.document import EPCIS_CONTEXTS
from cloud_collector.epcis.query import Query

_COLUMNS = (
    "e.event_id, e.event_type, e.event_time, e.record_time, e.body, e.body_format,"
    " e.epcis_context, e.batch_id"
)
# A batch's readings per device and tag, from the rollups kept at ingest (migration 0006):
# never a scan of the batch's readings, however many there are.
_READINGS = """
select batch_id, device, tag, unit, good_count as count, min, max,
    sum / nullif(good_count, 0) as mean, first_time as first, last_time as last
from batch_tag_stats
where batch_id = any(%s) and good_count > 0
order by batch_id, device, tag
"""


class TooLarge(Exception):
    """More events match than maxEventCount allows."""


@dataclass(frozen=True)
class Page:
    document: dict[str, Any]
    next_token: str | None


async def page(conn: AsyncConnection, query: Query) -> Page:
    if query.max_event_count is not None:
        sql, params = query.count_sql(query.max_event_count + 1)
        row = await (await conn.execute(sql, params)).fetchone()
        if row is not None and row[0] > query.max_event_count:
            raise TooLarge(
                f"more than maxEventCount={query.max_event_count} events match: narrow the "
                "query or page through it with perPage"
            )
    limit = query.per_page
    if query.event_count_limit is not None:
        limit = max(0, min(limit, query.event_count_limit - query.served))
    rows: list[dict[str, Any]] = []
    if limit > 0:
        sql, params = query.sql(_COLUMNS, limit + 1)
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    served = query.served + len(rows)
    if query.event_count_limit is not None and served >= query.event_count_limit:
        more = False
    namespaces, events = render.merge_contexts(await _render(conn, rows))
    token = None
    if more and rows:
        last = rows[-1]
        token = query.next_token((last[query.order_column], last["event_id"]), served)
    return Page(query_document(namespaces, events), token)


def query_document(namespaces: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    context: list[Any] = [EPCIS_CONTEXTS[0]]
    if namespaces:
        context.append(namespaces)
    return {
        "@context": context,
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": render.iso(datetime.now(UTC)),
        "epcisBody": {
            "queryResults": {
                "queryName": "SimpleEventQuery",
                "resultsBody": {"eventList": events},
            }
        },
    }


async def _render(
    conn: AsyncConnection, rows: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    batches = [
        r["batch_id"]
        for r in rows
        if r["body_format"] == "trace.v1" and r["event_type"] == "TransformationEvent"
    ]
    readings: dict[str, list[dict[str, Any]]] = {}
    if batches:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_READINGS, (batches,))
            for r in await cur.fetchall():
                readings.setdefault(r["batch_id"], []).append(r)
    out = []
    for r in rows:
        if r["body_format"] == "epcis":
            event = render.captured(r["body"], r["event_id"], r["record_time"])
            out.append((event, r["epcis_context"] or {}))
        else:
            batch = (
                readings.get(r["batch_id"], []) if r["event_type"] == "TransformationEvent" else []
            )
            event = render.own_event(
                r["event_type"], r["body"], r["event_id"], r["record_time"], batch
            )
            out.append((event, render.OWN_NAMESPACE))
    return out
