"""Places: the plant's location hierarchy (site > warehouse > zone > rack > bin) on the rows
of `locations` that the ERP import (`PUT /api/v1/erp/locations`: `kind`, `parent_id`,
`sgln`) and EPCIS master data (a BusinessLocation's `children`, its `trace:placeKind`
attribute; master_data.py) describe, migration 0028.

An event names a place by its id or by its SGLN; `canonical` turns either into the id the
stock is kept under (stock.py), so a bin the ERP calls `WH1-A-01-03` and a partner's WMS
calls `urn:epc:id:sgln:...` is one bin. Parents are not foreign keys (the ERP may send a
bin before its rack); a walk up or down stops after MAX_DEPTH levels, so a loop in the
hierarchy (bad data) cannot hang a query.
"""

from __future__ import annotations

from typing import Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from protocols.strict import Strict

Kind = Literal["site", "warehouse", "zone", "rack", "bin"]
KINDS: tuple[Kind, ...] = ("site", "warehouse", "zone", "rack", "bin")
MAX_DEPTH = 16  # levels walked up or down: five kinds, with room for sub-zones

# The id a place's stock is kept under, of the text as an event names it.
CANONICAL_OF = """coalesce((select location_id from locations where location_id = {0}),
         (select location_id from locations where sgln = {0}), {0})"""
CANONICAL = "select " + CANONICAL_OF.format("%(place)s")
# The place and everything inside it (its id first).
WITHIN = f"""
with recursive down(location_id, depth) as (
    select %(place)s::text, 0
    union
    select l.location_id, d.depth + 1 from locations l join down d on l.parent_id = d.location_id
    where d.depth < {MAX_DEPTH}
)
select location_id from down
"""
# The place and the places it is part of, nearest first.
_UP = f"""
with recursive up(location_id, name, parent_id, kind, depth) as (
    select location_id, name, parent_id, kind, 0 from locations where location_id = %(place)s
    union all
    select l.location_id, l.name, l.parent_id, l.kind, u.depth + 1
    from locations l join up u on l.location_id = u.parent_id where u.depth < {MAX_DEPTH}
)
"""
# Where a pick at a place is judged for FIFO/FEFO: its warehouse, else the outermost place
# it is part of, else the place alone (a place nobody described).
SCOPE = (
    _UP
    + """
select coalesce((select location_id from up order by (kind = 'warehouse') desc nulls last,
                 depth desc limit 1), %(place)s)
"""
)
_PATH = _UP + "select location_id, name, kind from up order by depth desc"
_COLUMNS = "location_id, name, kind, parent_id, gln, sgln, address"
_LIST = f"""
select {_COLUMNS} from locations
where (%(kind)s::text is null or kind = %(kind)s)
  and (%(within)s::text is null or location_id in ({WITHIN.replace("%(place)s", "%(within)s")}))
  and (kind is not null or parent_id is not null or %(all)s)
order by location_id limit %(limit)s
"""
_ONE = f"select {_COLUMNS} from locations where location_id = %(place)s"
_CHILDREN = f"select {_COLUMNS} from locations where parent_id = %(place)s order by location_id"


class Place(Strict):
    location_id: str
    name: str
    kind: Kind | None
    parent_id: str | None
    gln: str | None
    sgln: str | None
    address: str | None


class PathStep(Strict):
    location_id: str
    name: str
    kind: Kind | None


class PlaceDetail(Strict):
    place: Place
    path: list[PathStep]  # outermost first, ending with the place itself
    children: list[Place]


async def canonical(conn: AsyncConnection, place: str) -> str:
    """The id a place's stock is kept under: its location_id, by id or by SGLN."""
    row = await (await conn.execute(CANONICAL, {"place": place})).fetchone()
    return str(row[0]) if row else place


async def scope(conn: AsyncConnection, place: str) -> str:
    row = await (await conn.execute(SCOPE, {"place": place})).fetchone()
    return str(row[0]) if row else place


async def places(
    conn: AsyncConnection,
    kind: Kind | None = None,
    within: str | None = None,
    limit: int = 1000,
) -> list[Place]:
    """Places of the hierarchy (a kind or a parent set), by id; `within`: that place and
    everything inside it (whatever their kind); `kind`: only those."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"kind": kind, "within": within, "all": within is not None, "limit": limit}
    rows = await (await cur.execute(_LIST, params)).fetchall()
    return [Place(**r) for r in rows]


async def place(conn: AsyncConnection, place_id: str) -> PlaceDetail | None:
    """A place (by id or SGLN) with the places it is part of and those directly in it."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"place": await canonical(conn, place_id)}
    row = await (await cur.execute(_ONE, params)).fetchone()
    if row is None:
        return None
    path = await (await cur.execute(_PATH, params)).fetchall()
    children = await (await cur.execute(_CHILDREN, params)).fetchall()
    return PlaceDetail(
        place=Place(**row),
        path=[PathStep(**p) for p in path],
        children=[Place(**c) for c in children],
    )
