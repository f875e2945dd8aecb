"""The recall by condition: the batches that ran while a reading met a condition (above,
below a limit, or bad quality), and everything downstream of them."""

from __future__ import annotations

from psycopg import AsyncConnection

from cloud_collector import retention
from cloud_collector.trace.loops import GIVEN, loop_gaps
from cloud_collector.trace.models import Condition, ConditionBatch, ConditionRecall
from cloud_collector.trace.recall import on_hand_by_place, recall_lines
from cloud_collector.trace.rows import fetch, fetch_named, lots_where
from cloud_collector.trace.walk import Reached, by_customer, reachable, shipment_lines

_CONDITION_SQL = {
    "above": "r.quality = 'good' and r.value > %(limit)s",
    "below": "r.quality = 'good' and r.value < %(limit)s",
    "bad_quality": "r.quality = 'bad'",
}
_WORST = {"above": "max(r.value)", "below": "min(r.value)", "bad_quality": "null::float8"}
_MADE_BY = (
    "select lot_id from lots where batch_id = any(%s)"
    " union select output_lot from lot_links where batch_id = any(%s)"
)


def _params(c: Condition) -> dict[str, object]:
    return {"tag": c.tag, "device": c.device, "start": c.start, "end": c.end, "limit": c.limit}


async def batches_under(conn: AsyncConnection, c: Condition) -> list[ConditionBatch]:
    """The batches that ran while the condition held, the earliest first."""
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
    return [ConditionBatch(**r) for r in await fetch_named(conn, sql, _params(c))]


async def made_by(conn: AsyncConnection, batch_ids: list[str]) -> list[int]:
    """The lots these batches made: where a recall by condition starts its walk."""
    return [r["lot_id"] for r in await fetch(conn, _MADE_BY, batch_ids, batch_ids)]


async def condition_roots(conn: AsyncConnection, c: Condition) -> list[int]:
    """The lots made by the batches that ran while the condition held (the recall list of
    the condition is these lots' forward walk: trace.recall_csv takes them)."""
    return await made_by(conn, [b.batch_id for b in await batches_under(conn, c)])


async def recall_by_condition(conn: AsyncConnection, c: Condition) -> ConditionRecall:
    """The batches that ran while the condition held, and everything downstream of them:
    the lots, their recall list (shipped, on hand by place) as a lot's recall gives it,
    the shipments and customers with quantities, and the gaps."""
    batches = await batches_under(conn, c)
    ids = await reachable(conn, await made_by(conn, [b.batch_id for b in batches]), "forward")
    lots = await lots_where(conn, "lot_id = any(%s)", (ids,))
    lines = await recall_lines(conn, Reached(ids))
    shipments = await shipment_lines(conn, ids)
    gaps = []
    gone = await retention.dropped_before(conn)
    if gone is not None and c.start < gone:
        gaps.append(
            f"readings taken before {gone.isoformat()} were removed by readings retention "
            "(TRACE_READINGS_RETENTION_DAYS): a batch that met the condition before then is "
            "not found here; each batch's summary (GET /api/v1/batches/{batch}/parameters) "
            "keeps its tags' extremes and excursions"
        )
    if not batches:
        gaps.append("no batch ran while the condition held in that time range")
    for b in batches:
        if b.batch_id not in {x.batch_id for x in lots}:
            gaps.append(f"batch {b.batch_id} has no recorded output lot: nothing to follow")
    unbatched = await fetch_named(
        conn,
        f"""select count(*) as n from readings r
            where r.tag = %(tag)s and (%(device)s::text is null or r.device = %(device)s)
              and r.time >= %(start)s and r.time < %(end)s and r.batch_id is null
              and {_CONDITION_SQL[c.condition]}""",
        _params(c),
    )
    if unbatched and unbatched[0]["n"]:
        gaps.append(f"{unbatched[0]['n']} readings met the condition while no batch ran")
    gaps += await loop_gaps(conn, GIVEN, {"ids": ids}, "forward")
    return ConditionRecall(
        condition=c,
        batches=batches,
        lots=lots,
        lines=lines,
        on_hand=on_hand_by_place(lines),
        shipments=shipments,
        customers=by_customer(shipments),
        gaps=gaps,
    )
