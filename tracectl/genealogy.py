"""`tracectl trace` and `tracectl recall`: a lot's genealogy as a tree in the terminal, and
the recall list of a lot or of a process condition, from the collector's trace API."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any
from urllib.parse import quote

from tracectl.collector_api import CollectorApi, CommandError
from tracectl.tables import plant_zone, quantity, safe, table, when

Json = dict[str, Any]
ORIGIN = {"supplier": "received from a supplier", "own": "made here", "unknown": "origin unknown"}


def lot_path(lot: str) -> str:
    """`{lot}` as the URL path carries it: what a scanner pasted (a GS separator, a space, a
    '?' or '%') is escaped; the slashes of a Digital Link stay."""
    return quote(lot, safe="/:()")


def _lot_label(lot: Json) -> str:
    parts = [f"lot {safe(lot['lot_code'])}"]
    if lot.get("gtin"):
        parts.append(f"GTIN {safe(lot['gtin'])}")
    if lot.get("quantity") is not None:
        parts.append(quantity(lot["quantity"], lot.get("uom")))
    label = ", ".join(parts)
    origin = ORIGIN.get(lot.get("origin") or "unknown", safe(lot.get("origin")))
    if lot.get("supplier"):
        origin += f" ({safe(lot['supplier'])}" + (
            f", their lot {safe(lot['supplier_lot'])})" if lot.get("supplier_lot") else ")"
        )
    return f"{label}  [{origin}]"


def _batch_label(batch_id: str, traced: Json | None) -> str:
    if traced is None:
        return f"batch {safe(batch_id)}"
    b = traced["batch"]
    label = f"batch {safe(batch_id)} on {safe(b['line_id'])}, {when(b['started_at'])} -> "
    label += when(b["ended_at"]) if b.get("ended_at") else "running"
    if traced.get("excursions"):
        label += f"  ! {len(traced['excursions'])} excursion(s)"
    failed = [q for q in traced.get("qc", []) if not q["passed"]]
    if failed:
        label += f"  ! QC failed: {', '.join(safe(q['check_name']) for q in failed)}"
    return label


def _receipt_label(r: Json) -> str:
    label = f"received {safe(r.get('document'))} at {safe(r.get('location'))}"
    if r.get("supplier"):
        label += f" from {safe(r['supplier'])}"
    return f"{label}, {when(r['time'])}, {quantity(r.get('quantity'), r.get('uom'))}"


def _shipment_label(s: Json) -> str:
    to = s.get("customer") or s.get("customer_id") or s.get("ship_to") or "customer unknown"
    label = f"shipped {safe(s.get('shipment'))} to {safe(to)}"
    if s.get("order_id"):
        label += f" (order {safe(s['order_id'])})"
    return f"{label}, {when(s['time'])}, {quantity(s.get('quantity'), s.get('uom'))}"


def trace_tree(body: Json) -> list[str]:
    """The trace as a tree: from the lot asked for, through the batches that made it
    (backward) or used it (forward), to supplier receipts or shipments. A lot met again is
    shown once and then named; a loop (rework) is marked where it closes."""
    backward = body["direction"] == "backward"
    lots: dict[int, Json] = {lot["lot_id"]: lot for lot in body["lots"]}
    root = body["lot"]
    lots.setdefault(root["lot_id"], root)
    traced = {t["batch"]["batch_id"]: t for t in body["batches"]}
    children: dict[int, dict[str, list[int]]] = defaultdict(dict)
    for link in body["links"]:
        parent, child = (
            (link["output_lot"], link["input_lot"])
            if backward
            else (link["input_lot"], link["output_lot"])
        )
        kids = children[parent].setdefault(link["batch_id"], [])
        if child not in kids:
            kids.append(child)
    ends: dict[int | None, list[str]] = defaultdict(list)
    for r in body["receipts"] if backward else body["shipments"]:
        ends[r.get("lot_id")].append(_receipt_label(r) if backward else _shipment_label(r))

    out = [_lot_label(root)]
    shown = {root["lot_id"]}

    def walk(lot_id: int, prefix: str, path: frozenset[int]) -> None:
        entries: list[tuple[str, Callable[[str], None] | None]] = []
        for batch_id, kids in children.get(lot_id, {}).items():

            def batch(inner: str, kids: list[int] = kids) -> None:
                for i, kid in enumerate(kids):
                    last = i == len(kids) - 1
                    branch, deeper = ("└─ ", "   ") if last else ("├─ ", "│  ")
                    lot = lots.get(kid, {"lot_code": f"#{kid}", "lot_id": kid})
                    if kid in path:
                        out.append(f"{inner}{branch}↻ lot {safe(lot['lot_code'])} (a loop: above)")
                    elif kid in shown:
                        out.append(f"{inner}{branch}{_lot_label(lot)} (shown above)")
                    else:
                        shown.add(kid)
                        out.append(f"{inner}{branch}{_lot_label(lot)}")
                        walk(kid, inner + deeper, path | {kid})

            entries.append((_batch_label(batch_id, traced.get(batch_id)), batch))
        entries += [(label, None) for label in ends.get(lot_id, [])]
        for i, (label, expand) in enumerate(entries):
            last = i == len(entries) - 1
            branch, deeper = ("└─ ", "   ") if last else ("├─ ", "│  ")
            out.append(f"{prefix}{branch}{label}")
            if expand is not None:
                expand(prefix + deeper)

    walk(root["lot_id"], "", frozenset({root["lot_id"]}))
    unplaced = ends.get(None, [])
    if unplaced:
        out.append("not tied to a lot:")
        out += [f"  {label}" for label in unplaced]
    return out


def _gaps(gaps: list[str]) -> list[str]:
    if not gaps:
        return ["no gaps: every lot has its origin, every batch its readings and inputs"]
    return [f"{len(gaps)} gap(s):", *(f"  ! {safe(g)}" for g in gaps)]


def _customers(customers: list[Json]) -> list[str]:
    if not customers:
        return []
    rows = [
        [
            c.get("customer") or c.get("customer_id") or "unknown (ERP has not said)",
            ", ".join(c.get("shipments", [])) or None,
            ", ".join(c.get("orders", [])) or None,
            c.get("units") or None,
        ]
        for c in customers
    ]
    return ["customers:", table(["CUSTOMER", "SHIPMENTS", "ORDERS", "UNITS"], rows, "  ")]


def cmd_trace(args: argparse.Namespace) -> None:
    direction = "forward" if args.forward else "backward"
    body = CollectorApi(args.api).get_json(f"/api/v1/lots/{lot_path(args.lot)}/trace/{direction}")
    if args.json:
        print(json.dumps(body, indent=2))
        return
    print(f"{direction} trace of {safe(args.lot)}:")
    print("\n".join(trace_tree(body)))
    print("\n".join(_customers(body.get("customers", []))))
    print("\n".join(_gaps(body["gaps"])))


def _recall_lines(lines: list[Json]) -> str:
    rows = [
        [
            x["lot_code"],
            x["gtin"],
            x["status"],
            x.get("customer") or x.get("customer_id") or x.get("location"),
            x.get("order_id"),
            x.get("shipment"),
            quantity(x.get("quantity"), x.get("uom")),
            x.get("epc"),
        ]
        for x in lines
    ]
    headers = ["LOT", "GTIN", "STATUS", "WHERE / CUSTOMER", "ORDER", "SHIPMENT", "QUANTITY", "AS"]
    return table(headers, rows)


def _day_or_time(text: str, end: bool) -> str:
    """A --from/--to value: a time with its offset as given, or a day of the plant
    (TRACE_PLANT_TIMEZONE; a whole day: --to includes its day)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return text  # a time: the API checks it and says what is wrong
    moment = datetime.combine(day, time.max if end else time.min, plant_zone())
    return moment.isoformat()


def condition_body(args: argparse.Namespace) -> Json:
    words = list(args.condition)
    tag, rest = words[0], words[1:]
    if not rest or rest[0] not in ("above", "below", "bad_quality"):
        raise CommandError(
            "--condition TAG above LIMIT | TAG below LIMIT | TAG bad_quality "
            "(e.g. --condition temperature above 80)"
        )
    body: Json = {
        "tag": tag,
        "condition": rest[0],
        "from": _day_or_time(args.start, end=False),
        "to": _day_or_time(args.end, end=True),
    }
    if rest[0] != "bad_quality":
        try:
            body["limit"] = float(rest[1])
        except (IndexError, ValueError):
            raise CommandError(
                f"--condition {tag} {rest[0]} needs a number: e.g. --condition {tag} {rest[0]} 80"
            ) from None
    if args.device:
        body["device"] = args.device
    return body


def cmd_recall(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    if args.condition:
        if args.lot or not (args.start and args.end):
            raise CommandError(
                "a recall by condition takes --from and --to and no lot: "
                "tracectl recall --condition temperature above 80 --from 2026-11-01 --to 2026-11-02"
            )
        body = api.call_json("POST", "/api/v1/recall/by-condition", json=condition_body(args))
        if args.json:
            print(json.dumps(body, indent=2))
            return
        c = body["condition"]
        print(
            f"batches where {safe(c['tag'])} was {safe(c['condition'])} "
            f"{'' if c.get('limit') is None else c['limit']} between {when(c['from'])} and "
            f"{when(c['to'])}: {len(body['batches'])}"
        )
        rows = [
            [b["batch_id"], b["line_id"], b["readings"], when(b["first_time"]), b["worst"]]
            for b in body["batches"]
        ]
        if rows:
            print(table(["BATCH", "LINE", "READINGS", "FIRST", "WORST"], rows, "  "))
        print(f"lots made by them and downstream: {len(body['lots'])}")
        for lot in body["lots"]:
            print(f"  {_lot_label(lot)}")
        for s in body["shipments"]:
            print(f"  {_shipment_label(s)}")
        print("\n".join(_customers(body["customers"])))
        print("\n".join(_gaps(body["gaps"])))
        return
    if not args.lot:
        raise CommandError("recall takes a lot, or --condition ...: tracectl recall LOT")
    body = api.get_json(f"/api/v1/lots/{lot_path(args.lot)}/recall")
    if args.json:
        print(json.dumps(body, indent=2))
        return
    print(f"recall of {_lot_label(body['lot'])}: {body['affected_lots']} lot(s) affected")
    if body["lines"]:
        print(_recall_lines(body["lines"]))
    print("\n".join(_customers(body["customers"])))
    print("\n".join(_gaps(body["gaps"])))
    print(
        f"as a spreadsheet: tracectl export fsma {safe(args.lot)} --recall "
        f"(FSMA 204), or {api.url}/api/v1/lots/{lot_path(args.lot)}/recall?format=csv"
    )


def add_parsers(sub: argparse._SubParsersAction, api_url: str) -> None:  # type: ignore[type-arg]
    trace = sub.add_parser(
        "trace",
        help="a lot's genealogy as a tree: where it came from (--backward, the default) "
        "or where it went (--forward)",
    )
    trace.add_argument("lot", help="anything the API's {lot} takes: lot id, GS1 text, SSCC ...")
    way = trace.add_mutually_exclusive_group()
    way.add_argument("--backward", action="store_true", help="upstream to supplier lots")
    way.add_argument("--forward", action="store_true", help="downstream to customers")
    trace.add_argument("--api", default=None, help=f"collector API URL (TRACE_API_URL, {api_url})")
    trace.add_argument("--json", action="store_true", help="the API's answer as it is")
    trace.set_defaults(func=cmd_trace)

    recall = sub.add_parser(
        "recall",
        help="the recall list of a lot, or of the batches that ran under a condition; "
        "`tracectl recall case ...`: recall cases and mock-recall drills",
    )
    recall.add_argument("lot", nargs="?")
    recall.add_argument(
        "--condition",
        nargs="+",
        metavar="WORD",
        help="TAG above LIMIT | TAG below LIMIT | TAG bad_quality",
    )
    recall.add_argument("--device", help="only this device's tag (condition)")
    recall.add_argument("--from", dest="start", help="condition: from (a date or a time)")
    recall.add_argument("--to", dest="end", help="condition: to (a date, included, or a time)")
    recall.add_argument("--api", default=None, help=f"collector API URL (TRACE_API_URL, {api_url})")
    recall.add_argument("--json", action="store_true", help="the API's answer as it is")
    recall.set_defaults(func=cmd_recall)
