"""The genealogy of one lot as a graph to draw: lots, batches, receipts, shipments and
customers as nodes of distinct kinds, what passed between them (with quantities) as edges,
and what the trace found wrong marked on them: lots with no recorded origin or a quantity
note, batches with excursions, and the gaps of a batch's record (no inputs, no readings,
inputs and outputs that do not balance, items without quantity, readings that never
arrived: its kinds as marks, its reasons on the node and its sentences as the tooltip),
and the edges of every loop (a cycle of lots and batches: rework, or bad data). Built from
the two traces of the lot (backward and forward); the browser only lays it out and draws
it (static/trace.js).

Every node links to a page: a lot to its trace, a batch to its page, a receipt to the
received lot's trace at its receipts, a shipment to the shipped lot's trace at its
shipments (order, customer, ship-to, quantity), a customer to the recall of the traced
lot (every customer it reached, with quantities). All are reader pages, as the trace page
itself is: a partner is refused the trace page, so never given a link out of it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import quote

from pydantic import Field

from cloud_collector import queries, trace
from cloud_collector.pages.i18n import Translate
from cloud_collector.pages.render import quantity
from protocols.strict import Strict

NodeKind = Literal["lot", "batch", "receipt", "shipment", "customer"]
# Marks a node can carry (static/trace.js styles each; the report's legend names them).
Flag = Literal[
    "focus",
    "no_origin",
    "quantity_note",
    "excursion",
    "no_readings",
    "no_inputs",
    "unbalanced",
    "partly_counted",
    "never_arrived",
]


class Node(Strict):
    id: str
    kind: NodeKind
    label: str
    href: str | None = None  # where a click moves to
    title: str = ""  # the tooltip: what is wrong with it, in full
    flags: list[Flag] = Field(default_factory=list)


class Edge(Strict):
    id: str
    source: str
    target: str
    label: str = ""  # the quantity that passed
    loop: bool = False  # part of a cycle of lots and batches


class Genealogy(Strict):
    nodes: list[Node]
    edges: list[Edge]
    loops: int  # cycles found (strongly connected groups of lots and batches)


Summaries = Mapping[str, tuple[list[queries.TagSummary], list[queries.Excursion]]]


def _gap_reasons(_: Translate) -> dict[trace.BatchGapKind, str]:
    """A batch gap's kind as the line its node shows, in the page's language."""
    return {
        "no_inputs": _("no inputs recorded"),
        "no_readings": _("no readings"),
        "unbalanced": _("inputs and outputs do not balance"),
        "partly_counted": _("items without quantity"),
        "never_arrived": _("readings never arrived"),
    }


def _english(text: str) -> str:
    return text


def _amount(lines: Iterable[trace.BatchLot], lot_id: int) -> str:
    return " + ".join(quantity(x.quantity, x.uom) for x in lines if x.lot_id == lot_id)


class _Builder:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str], Edge] = {}

    def node(self, node: Node) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def edge(self, source: str, target: str, label: str = "") -> None:
        key = (source, target)
        if key in self.edges:
            if label and label not in self.edges[key].label:
                joined = f"{self.edges[key].label} + {label}".strip(" +")
                self.edges[key] = self.edges[key].model_copy(update={"label": joined})
            return
        self.edges[key] = Edge(id=f"e{len(self.edges)}", source=source, target=target, label=label)


def build(
    backward: trace.Trace,
    forward: trace.Trace,
    summaries: Summaries,
    products: Mapping[str, str],
    gaps: Iterable[trace.BatchGap] = (),
    _: Translate = _english,
) -> Genealogy:
    """The graph of `backward` and `forward` (the two traces of one lot). `summaries`: the
    rollups of every batch in them (excursions, readings); `products`: GTIN -> name;
    `gaps`: what their batches' records lack (trace.batch_gaps); `_`: the page's language."""
    g = _Builder()
    focus = backward.lot.lot_id
    reasons = _gap_reasons(_)
    gaps_of: dict[str, list[trace.BatchGap]] = defaultdict(list)
    for gap in gaps:
        gaps_of[gap.batch_id].append(gap)
    lots = {x.lot_id: x for x in [*backward.lots, *forward.lots]}
    batches = {b.batch.batch_id: b for b in [*forward.batches, *backward.batches]}
    links = {(x.input_lot, x.output_lot, x.batch_id) for x in [*backward.links, *forward.links]}
    received = {r.lot_id for r in [*backward.receipts, *forward.receipts]}
    produced = {output for _, output, _ in links} | {x.lot_id for x in lots.values() if x.batch_id}

    for lot in lots.values():
        flags: list[Flag] = []
        if lot.lot_id == backward.lot.lot_id:
            flags.append("focus")
        if lot.origin != "supplier" and lot.lot_id not in produced | received:
            flags.append("no_origin")
        if lot.quantity_note:
            flags.append("quantity_note")
        product = products.get(lot.gtin) or lot.gtin
        lines = [lot.lot_code, product, quantity(lot.quantity, lot.uom)]
        g.node(
            Node(
                id=f"lot:{lot.lot_id}",
                kind="lot",
                label="\n".join(x for x in lines if x),
                href=f"/trace?lot={lot.lot_id}",
                flags=flags,
            )
        )

    def batch_node(batch_id: str) -> str:
        flags: list[Flag] = []
        tags, excursions = summaries.get(batch_id, ([], []))
        if excursions:
            flags.append("excursion")
        if not tags:
            flags.append("no_readings")
        found = gaps_of.get(batch_id, [])
        kinds = list(dict.fromkeys(x.kind for x in found))
        flags += [k for k in kinds if k not in flags]
        traced = batches.get(batch_id)
        line = traced.batch.line_id if traced else ""
        warning = ""
        if kinds:
            warning = "⚠ " + _("gap: {reasons}").format(
                reasons=_("; ").join(reasons[k] for k in kinds)
            )
        return g.node(
            Node(
                id=f"batch:{batch_id}",
                kind="batch",
                label="\n".join(x for x in (batch_id, line, warning) if x),
                href=f"/batches/{quote(batch_id)}",
                flags=flags,
                title="\n".join(x.text for x in found),
            )
        )

    for input_lot, output_lot, batch_id in sorted(links):
        b = batch_node(batch_id)
        traced = batches.get(batch_id)
        used = _amount(traced.inputs, input_lot) if traced else ""
        made = _amount(traced.outputs, output_lot) if traced else ""
        g.edge(f"lot:{input_lot}", b, used)
        g.edge(b, f"lot:{output_lot}", made)
    for lot in lots.values():  # a batch that recorded no inputs made its lot all the same
        if lot.batch_id and not any(e[1] == f"lot:{lot.lot_id}" for e in g.edges):
            traced = batches.get(lot.batch_id)
            made = _amount(traced.outputs, lot.lot_id) if traced else ""
            g.edge(batch_node(lot.batch_id), f"lot:{lot.lot_id}", made)

    for r in [*backward.receipts, *forward.receipts]:
        if r.lot_id is None:
            continue
        name = r.document or r.supplier or r.epc or "?"
        rid = g.node(
            Node(
                id=f"receipt:{name}",
                kind="receipt",
                label="\n".join(x for x in (r.document, r.supplier) if x) or name,
                href=f"/trace?lot={r.lot_id}#receipts",
            )
        )
        g.edge(rid, f"lot:{r.lot_id}", quantity(r.quantity, r.uom) if r.quantity else "")

    # Shipments of the lot and of its descendants (a backward trace's shipments are its
    # ancestors' other business).
    descendants = {x.lot_id for x in forward.lots}
    for s in forward.shipments:
        if s.lot_id is None or s.lot_id not in descendants:
            continue
        name = s.shipment or s.epc or "?"
        sid = g.node(
            Node(
                id=f"shipment:{name}",
                kind="shipment",
                label="\n".join(x for x in (name, s.order_id) if x),
                href=f"/trace?lot={s.lot_id}#shipments",
            )
        )
        g.edge(f"lot:{s.lot_id}", sid, quantity(s.quantity, s.uom) if s.quantity else "")
        whom = s.customer_id or s.ship_to
        if whom:
            cid = g.node(
                Node(
                    id=f"customer:{whom}",
                    kind="customer",
                    label=s.customer or whom,
                    href=f"/recall?lot={focus}",
                )
            )
            g.edge(sid, cid)

    edges = list(g.edges.values())
    loops = cycles(g.nodes.keys(), [(e.source, e.target) for e in edges])
    in_cycle = {n: i for i, group in enumerate(loops) for n in group}
    marked = [
        e.model_copy(update={"loop": True})
        if e.source in in_cycle and in_cycle.get(e.source) == in_cycle.get(e.target)
        else e
        for e in edges
    ]
    return Genealogy(nodes=list(g.nodes.values()), edges=marked, loops=len(loops))


def cycles(nodes: Iterable[str], edges: list[tuple[str, str]]) -> list[set[str]]:
    """The strongly connected groups of more than one node (Tarjan, iterative: a genealogy
    deep enough to overflow Python's recursion must still draw)."""
    successors: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        successors[source].append(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            for i in range(child, len(successors[node])):
                nxt = successors[node][i]
                if nxt not in index:
                    work.append((node, i + 1))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return groups
