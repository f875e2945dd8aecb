"""Where a device served, from its readings: one period per stretch of time it was read at
one line (or dock door) of one edge. A device keeps its name when a site version moves it
to another line (device_profiles/sites.py: a move, not a restart), so its history reads on
across the move: each reading keeps the line and batch it was bound to when taken, and
these periods show both lines' in order (a device moved back is a third period)."""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from protocols.strict import Strict

MAX_BATCHES = 100  # batch ids listed per period; `batch_count` counts all


class Placement(Strict):
    edge_id: str
    line_id: str  # the station: a line, or a dock door
    first_reading: datetime
    last_reading: datetime
    readings: int
    batch_count: int
    batches: list[str]  # the batches its readings were bound to, first MAX_BATCHES by time


# Gaps and islands: consecutive readings (by time) at one (edge, line) share an island.
_PLACEMENTS = """
with ordered as (
    select r.time, r.batch_id, s.edge_id, r.line_id,
        row_number() over (order by r.time, r.stream_id, r.seq)
        - row_number() over (partition by s.edge_id, r.line_id
                             order by r.time, r.stream_id, r.seq) as island
    from readings r join edge_streams s using (stream_id)
    where r.device = %(device)s and r.time >= %(start)s and r.time < %(end)s
        and (%(edge)s::text is null or s.edge_id = %(edge)s::text)
), periods as (
    select edge_id, line_id, island, min(time) as first_reading, max(time) as last_reading,
        count(*) as readings
    from ordered group by edge_id, line_id, island
), batches as (
    select edge_id, line_id, island, batch_id, min(time) as first_time
    from ordered where batch_id is not null group by edge_id, line_id, island, batch_id
)
select p.edge_id, p.line_id, p.first_reading, p.last_reading, p.readings,
    (select count(*) from batches b
     where (b.edge_id, b.line_id, b.island) = (p.edge_id, p.line_id, p.island)) as batch_count,
    coalesce((select array_agg(batch_id order by first_time) from (
        select b.batch_id, b.first_time from batches b
        where (b.edge_id, b.line_id, b.island) = (p.edge_id, p.line_id, p.island)
        order by b.first_time limit %(max_batches)s) firsts), '{}') as batches
from periods p order by p.first_reading
"""


async def placements(
    conn: AsyncConnection, device: str, start: datetime, end: datetime, edge: str | None = None
) -> list[Placement]:
    """The device's periods at each line between `start` (included) and `end`, in order."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        _PLACEMENTS,
        {"device": device, "start": start, "end": end, "edge": edge, "max_batches": MAX_BATCHES},
    )
    return [Placement.model_validate(row) for row in await cur.fetchall()]
