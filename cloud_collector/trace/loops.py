"""Every loop (a rework cycle, or bad data) among the lots of a trace's or a recall's set:
the strongly connected components of the set's lot links that hold more than one lot, or
one lot linked to itself. Each is one gap naming its lots, wherever it lies in the set,
not only through the traced lot.

Bounded for large sets: the database gives only the set's links that can lie on a loop
(_CANDIDATE_LINKS_OF: the links into lots that link no further are dropped), at most
MAX_LINKS of them; Python trims the rest with counters (Kahn's: a DAG, the usual answer,
empties there) and finds the components of what is left in one pass (Tarjan's, without
recursion). A set with more links than that says so in a gap, as contract 5 asks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from psycopg import AsyncConnection

from cloud_collector.trace.models import Direction
from cloud_collector.trace.rows import fetch_named

# Links that may lie on a loop, read from the database for one answer at most.
MAX_LINKS = 200_000
# Loops named in the gaps, and lots named per loop: the rest are counted.
MAX_LOOPS = 50
MAX_NAMED_LOTS = 20

# The set given as an array of lot ids (the other source is walk.reached_table's table).
GIVEN = "select unnest(%(ids)s::bigint[]) as lot_id"
# The set's links that may lie on a loop. A walk's set is closed in its direction (a forward
# set holds every output of its lots, a backward set every input), so its links are those
# of its lots on that side (one pass over lot_links), and a link into a lot that links no
# further that way (a shipped lot forward, a supplier's lot backward) lies on no loop:
# dropped against those same links, not against lot_links again.
_CANDIDATE_LINKS_OF = {
    direction: f"""
with ids as ({{ids}}),
inside as materialized (
    select k.input_lot, k.output_lot from ids join lot_links k on k.{near} = ids.lot_id
)
select e.input_lot, e.output_lot from inside e
where exists (select 1 from inside x where x.{near} = e.{far})
limit %(limit)s
"""
    for direction, near, far in (
        ("forward", "input_lot", "output_lot"),
        ("backward", "output_lot", "input_lot"),
    )
}
_LOTS = "select lot_id, gtin, lot_code from lots where lot_id = any(%(lots)s)"


def cycles(links: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The loops of the directed graph `links` (input lot -> output lot): each one's lots,
    sorted; the loops ordered by their smallest lot."""
    succ: dict[int, list[int]] = defaultdict(list)
    pending: dict[int, int] = defaultdict(int)  # links into each lot not yet trimmed
    for a, b in links:
        succ[a].append(b)
        pending[b] += 1
    # Kahn's trimming, with counters only: a DAG (the usual answer) empties here, in a
    # few operations per link; what is left are the loops and what lies downstream of them.
    queue = [n for n in succ if not pending[n]]
    while queue:
        for m in succ.get(queue.pop(), ()):
            pending[m] -= 1
            if not pending[m]:
                queue.append(m)
    left = {n for n, count in pending.items() if count}
    if not left:
        return []
    inner = {n: [m for m in succ.get(n, ()) if m in left] for n in left}
    found = [sorted(c) for c in _components(sorted(left), inner) if _is_loop(c, inner)]
    return sorted(found, key=min)


def _is_loop(component: list[int], succ: Mapping[int, list[int]]) -> bool:
    return len(component) > 1 or component[0] in succ.get(component[0], ())


def _components(nodes: list[int], succ: Mapping[int, list[int]]) -> list[list[int]]:
    """Tarjan's strongly connected components, iterative (a loop may be thousands of lots
    long: recursion would overflow Python's stack)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    found: list[list[int]] = []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(succ.get(root, ()))))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(succ.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(component)
    return found


def _name(gtin: str, lot_code: str, lot_id: int) -> str:
    return f"{lot_code} (GTIN {gtin}, id {lot_id})" if gtin else f"{lot_code} (id {lot_id})"


async def loop_gaps(
    conn: AsyncConnection, source: str, params: Mapping[str, object], direction: Direction
) -> list[str]:
    """The gaps of the loops among the lots of `source` (a statement whose rows are the
    set's lot_id, run with `params`): a set a walk in `direction` reached."""
    statement = _CANDIDATE_LINKS_OF[direction].format(ids=source)
    rows = await fetch_named(conn, statement, {**params, "limit": MAX_LINKS + 1})
    gaps = []
    if len(rows) > MAX_LINKS:
        gaps.append(
            f"more than {MAX_LINKS:,} links of this set may lie on loops: loops were looked "
            f"for among the first {MAX_LINKS:,} only; trace from a lot further down to see "
            "the rest"
        )
        rows = rows[:MAX_LINKS]
    found = cycles((r["input_lot"], r["output_lot"]) for r in rows)
    if not found:
        return gaps
    shown = found[:MAX_LOOPS]
    named = [lot for loop in shown for lot in loop[:MAX_NAMED_LOTS]]
    lots = {r["lot_id"]: r for r in await fetch_named(conn, _LOTS, {"lots": named})}

    def name(lot: int) -> str:
        row = lots.get(lot)
        return _name(row["gtin"], row["lot_code"], lot) if row else f"id {lot}"

    for loop in shown:
        if len(loop) == 1:
            gaps.append(
                f"lot {name(loop[0])} reaches itself: a loop in the genealogy (rework or bad data)"
            )
            continue
        names = ", ".join(name(lot) for lot in loop[:MAX_NAMED_LOTS])
        more = f" and {len(loop) - MAX_NAMED_LOTS} more" if len(loop) > MAX_NAMED_LOTS else ""
        gaps.append(
            f"a loop in the genealogy (rework or bad data): {len(loop)} lots reach one "
            f"another, each reaches itself: {names}{more}"
        )
    if len(found) > MAX_LOOPS:
        gaps.append(f"{len(found) - MAX_LOOPS} more loops in this set are not listed")
    return gaps
