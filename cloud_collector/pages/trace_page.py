"""The trace page: the one-click report. Search by anything the API's `{lot}` takes (a
scanned label pasted as is too); the lot's genealogy upstream and downstream as a graph;
its batches' key parameters, QC, operators and equipment; receipts, shipments and
customers; the gaps. Printable (static/pages.css `@media print`), dated in the plant's
time zone and stamped with who asked. Everything comes from the trace package's queries,
as the API's trace routes answer them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from psycopg import AsyncConnection

from cloud_collector import queries, trace
from cloud_collector.auth import Role
from cloud_collector.endpoints import Conn
from cloud_collector.pages import graph, i18n
from cloud_collector.pages.guard import page_of
from cloud_collector.pages.render import page
from protocols import gs1

router = APIRouter(include_in_schema=False, dependencies=page_of(Role.reader))

# The names of the products of the traced lots, for the graph's labels and the tables.
_PRODUCTS = "select gtin, name from products where gtin = any(%s)"


async def product_names(conn: AsyncConnection, gtins: set[str]) -> dict[str, str]:
    cur = await conn.execute(_PRODUCTS, (sorted(gtins),))
    return {gtin: name for gtin, name in await cur.fetchall()}


def lot_search_problem(text: str) -> str | None:
    """Why `text` cannot be looked up, if it cannot: a scanner's Group Separators and line
    ends are fine, other control characters (a NUL above all) are not in any label."""
    if any(ord(c) < 0x20 and c not in "\x1d\t\r\n" for c in text):
        return "The search holds control characters that no lot or label has."
    return None


def _started(b: trace.TracedBatch) -> tuple[bool, datetime, str]:
    started = b.batch.started_at
    return started is None, started or datetime.min.replace(tzinfo=UTC), b.batch.batch_id


# A scanner's symbology identifier (ISO/IEC 15424: "]C1" GS1-128, "]d2" DataMatrix, "]Q3"
# QR, "]e0" DataBar) before the data it read.
_SYMBOLOGY = re.compile(r"^\][A-Za-z][0-9A-Za-z]")


def scanned_label(text: str) -> str | None:
    """What a GS1 label read by a scanner names, as the trace's `{lot}` takes it: the raw
    element string a scanner types (AIs run together, GS only after a variable-length field
    that is not last) as GTIN + lot or SSCC; None when it is no such label."""
    raw = _SYMBOLOGY.sub("", text.strip(" \t\r\n"))
    if not raw[:2].isdigit():
        return None
    key = gs1.from_element_string(raw)
    if key is not None and key.gtin and key.lot:
        return f"01/{key.gtin}/10/{key.lot}"
    if key is not None and key.sscc:
        return key.sscc
    return None


async def resolve_search(conn: AsyncConnection, text: str) -> trace.Lot:
    """The lot a search names: as the API's `{lot}` reads it, else as a scanned label
    pasted as is (a lot code that happens to read as one is found first)."""
    try:
        return await trace.resolve(conn, text)
    except trace.UnknownLot:
        label = scanned_label(text)
        if label is None:
            raise
        return await trace.resolve(conn, label)


@router.get("/trace")
async def trace_page(
    request: Request, conn: Conn, lot: Annotated[str, Query(max_length=2000)] = ""
) -> Response:
    text = lot.strip()
    if not text:
        return page(request, "trace.html", lot=lot, found=None)
    if problem := lot_search_problem(text):
        return page(request, "trace.html", status=422, lot=lot, found=None, error=problem)
    try:
        target = await resolve_search(conn, lot)
    except trace.UnknownLot as err:
        return page(request, "trace.html", status=404, lot=lot, found=None, error=str(err))
    except trace.AmbiguousLot as err:
        return page(
            request,
            "trace.html",
            status=409,
            lot=lot,
            found=None,
            error=str(err),
            candidates=err.candidates,
        )
    backward = await trace.trace(conn, target, "backward")
    forward = await trace.trace(conn, target, "forward")
    summaries: dict[str, tuple[list[queries.TagSummary], list[queries.Excursion]]] = {
        b.batch.batch_id: (b.parameters, b.excursions) for b in backward.batches
    }
    rest = [b.batch.batch_id for b in forward.batches if b.batch.batch_id not in summaries]
    summaries |= await queries.summaries(conn, rest) if rest else {}
    lots = {x.lot_id: x for x in [*backward.lots, *forward.lots]}
    products = await product_names(conn, {x.gtin for x in lots.values() if x.gtin})
    traced = sorted({b.batch.batch_id for b in [*backward.batches, *forward.batches]})
    gaps_of_batches = await trace.batch_gaps(conn, traced)
    genealogy = graph.build(
        backward,
        forward,
        summaries,
        products,
        gaps_of_batches,
        i18n.translator(i18n.choose(request)),
    )
    upstream = sorted(
        (x for x in backward.lots if x.lot_id != target.lot_id), key=lambda x: x.lot_id
    )
    downstream = sorted(
        (x for x in forward.lots if x.lot_id != target.lot_id), key=lambda x: x.lot_id
    )
    batches = {b.batch.batch_id: b for b in [*forward.batches, *backward.batches]}
    gaps = list(dict.fromkeys([*backward.gaps, *forward.gaps]))
    return page(
        request,
        "trace.html",
        lot=lot,
        found=target,
        product=products.get(target.gtin, ""),
        products=products,
        upstream=upstream,
        downstream=downstream,
        batches=sorted(batches.values(), key=_started),
        summaries=summaries,
        excursions_by_batch={
            batch_id: {(e.device, e.tag): e for e in excursions}
            for batch_id, (_, excursions) in summaries.items()
        },
        receipts=backward.receipts,
        shipments=[s for s in forward.shipments if s.lot_id in {x.lot_id for x in forward.lots}],
        customers=forward.customers,
        lot_codes={x.lot_id: x.lot_code for x in lots.values()},
        gaps=gaps,
        graph=genealogy.model_dump(),
        loops=genealogy.loops,
        now=datetime.now(UTC),
    )
