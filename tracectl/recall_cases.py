"""`tracectl recall case ...`: recall cases and mock-recall drills from the collector's API
(/api/v1/recall-cases; a key of role quality to change a case, reader to look).

    tracectl recall case open LOT --title T [--drill]  (or --condition ... --from --to)
    tracectl recall case list [--drills] | show CASE [--recompute]
    tracectl recall case notify CASE CUSTOMER --by NAME --method phone [--at TIME]
    tracectl recall case return CASE CUSTOMER QUANTITY UOM [--lot LOT] [--at TIME]
    tracectl recall case place CASE PLACE held|destroyed QUANTITY UOM [--lot LOT]
    tracectl recall case hold CASE --reason TEXT | close CASE --summary TEXT
    tracectl recall case export CASE [--format xlsx|json] [-o FILE]
    tracectl recall case drill LOT [--title T]: open a drill, export it, report the time
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from tracectl.collector_api import CollectorApi, CommandError
from tracectl.export import download
from tracectl.genealogy import condition_body
from tracectl.tables import duration, plant_zone, quantity, safe, table, when

Json = dict[str, Any]
PATH = "/api/v1/recall-cases"


def _totals(values: dict[str, float]) -> str:
    return ", ".join(quantity(q, uom or None) for uom, q in sorted(values.items())) or "-"


def _print_case(record: Json) -> None:
    c = record["case"]
    origin = (
        f"lot {safe(c['lot_code'])}" + (f" (GTIN {safe(c['gtin'])})" if c.get("gtin") else "")
        if c["origin"] == "lot"
        else f"condition {safe(json.dumps(c['condition']))}"
    )
    kind = "drill" if c["drill"] else "recall case"
    print(f"{kind} {c['case_id']}: {safe(c['title'])} [{c['state']}]")
    print(f"  opened from {origin} by {safe(c['opened_by'])} at {when(c['opened_at'])}")
    print(f"  affected set as recomputed at {when(c['checked_at'])}")
    if c["closed_at"]:
        print(f"  closed by {safe(c['closed_by'])} at {when(c['closed_at'])}: {safe(c['summary'])}")
    if c["time_to_export_s"] is not None:
        print(f"  first complete export {duration(c['time_to_export_s'])} after opening")
    lots = [m for m in record["members"] if m["kind"] == "lot"]
    print(f"  lots: {len(lots)}")
    customers = [
        [
            x["customer_key"],
            x["customer"] or "-",
            ", ".join(x["shipments"]),
            _totals(x["shipped"]),
            when(x["last_notified_at"]) if x["notified"] else "NOT YET",
            _totals(x["returned"]),
            "" if x["at_opening"] else f"found {when(x['found_at'])}",
        ]
        for x in record["customers"]
    ]
    if customers:
        headers = ["CUSTOMER", "NAME", "SHIPMENTS", "SHIPPED", "NOTIFIED", "RETURNED", "LATE"]
        print(table(headers, customers, "  "))
    places = [
        [
            p["place"],
            ", ".join(p["lots"]),
            _totals(p["on_hand"]),
            _totals(p["current"]),
            _totals(p["held"]),
            _totals(p["destroyed"]),
        ]
        for p in record["places"]
    ]
    if places:
        headers = ["PLACE", "LOTS", "FOUND", "NOW", "HELD", "DESTROYED"]
        print(table(headers, places, "  "))
    for m in record["added_since_opening"]:
        what = m["lot_code"] or m["customer"] or m["key"]
        print(f"  added {when(m['found_at'])}: {m['kind']} {safe(what)}")
    for m in record["no_longer_found"]:
        print(f"  no longer found (kept): {m['kind']} {safe(m['key'])}")
    for gap in record["gaps"]:
        print(f"  gap: {safe(gap)}")


def _show(args: argparse.Namespace, record: Json) -> None:
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        _print_case(record)


def _now(text: str | None) -> str:
    return text or datetime.now(UTC).isoformat(timespec="seconds")


def _open_body(args: argparse.Namespace, drill: bool) -> Json:
    body: Json = {"title": args.title, "drill": drill}
    if args.condition:
        if args.lot or not (args.start and args.end):
            raise CommandError(
                "a case by condition takes --from and --to and no lot: tracectl recall case "
                "open --condition temperature above 80 --from 2026-11-01 --to 2026-11-02 --title T"
            )
        body["condition"] = condition_body(args)
    elif args.lot:
        body["lot"] = args.lot
    else:
        raise CommandError("a case opens from a lot or --condition: tracectl recall case open LOT")
    return body


def cmd_open(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    _show(args, api.call_json("POST", PATH, json=_open_body(args, args.drill)))


def cmd_list(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    found = api.get_json(f"{PATH}/drills" if args.drills else PATH)
    if args.json:
        print(json.dumps(found, indent=2))
        return
    rows = [
        [
            c["case_id"],
            "drill" if c["drill"] else "",
            c["state"],
            safe(c["title"]),
            when(c["opened_at"]),
            duration(c["time_to_export_s"]) if c["time_to_export_s"] is not None else "-",
            {True: "yes", False: "NO", None: "-"}[c["within_24h"]],
        ]
        for c in found
    ]
    print(table(["CASE", "", "STATE", "TITLE", "OPENED", "TO EXPORT", "IN 24 H"], rows))


def cmd_show(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    if args.recompute:
        _show(args, api.call_json("POST", f"{PATH}/{args.case}/refresh"))
    else:
        _show(args, api.get_json(f"{PATH}/{args.case}"))


def _post(args: argparse.Namespace, what: str, body: Json) -> None:
    _show(args, CollectorApi(args.api).call_json("POST", f"{PATH}/{args.case}/{what}", json=body))


def cmd_notify(args: argparse.Namespace) -> None:
    body = {
        "customer": args.customer,
        "notified_at": _now(args.at),
        "notified_by": args.by,
        "method": args.method,
        "contact": args.contact,
        "note": args.note,
    }
    _post(args, "notices", body)


def cmd_return(args: argparse.Namespace) -> None:
    body = {
        "customer": args.customer,
        "quantity": args.quantity,
        "uom": args.uom,
        "lot": args.lot,
        "received_at": _now(args.at),
        "note": args.note,
    }
    _post(args, "returns", body)


def cmd_place(args: argparse.Namespace) -> None:
    body = {
        "place": args.place,
        "action": args.action,
        "quantity": args.quantity,
        "uom": args.uom,
        "lot": args.lot,
        "happened_at": _now(args.at),
        "note": args.note,
    }
    _post(args, "places", body)


def cmd_hold(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    held = api.call_json("POST", f"{PATH}/{args.case}/hold", json={"reason": args.reason})
    print(f"{len(held['held'])} lot(s) put on hold; {len(held['already_held'])} were already")


def cmd_close(args: argparse.Namespace) -> None:
    _post(args, "close", {"summary": args.summary})


def _export(args: argparse.Namespace, api: CollectorApi, case_id: int) -> str:
    params = {"format": args.format, "tz": args.tz or plant_zone().key}
    fallback = f"recall-case-{case_id}.{args.format}"
    target, progress = download(
        api, f"{PATH}/{case_id}/export", params, args.output, fallback, args.force, False
    )
    return f"saved {safe(str(target))} ({progress.bytes:,} bytes)"


def cmd_export(args: argparse.Namespace) -> None:
    print(_export(args, CollectorApi(args.api), args.case))


def cmd_drill(args: argparse.Namespace) -> None:
    """Open a drill, take its complete export, and say how long it took from the opening."""
    api = CollectorApi(args.api)
    opened = api.call_json("POST", PATH, json=_open_body(args, drill=True))
    case_id = opened["case"]["case_id"]
    print(f"drill {case_id} opened: {len(opened['members'])} members")
    print(_export(args, api, case_id))
    case = api.get_json(f"{PATH}/{case_id}")["case"]
    verdict = "within" if case["within_24h"] else "NOT within"
    print(
        f"time from opening to the complete FSMA 204 export: "
        f"{duration(case['time_to_export_s'])} ({case['time_to_export_s']:.1f} s), "
        f"{verdict} the 24 hours FSMA 204 allows"
    )


def _common(p: argparse.ArgumentParser, api_url: str, json_out: bool = True) -> None:
    p.add_argument("--api", default=None, help=f"collector API URL (TRACE_API_URL, {api_url})")
    if json_out:
        p.add_argument("--json", action="store_true", help="the API's answer as it is")


def _origin(p: argparse.ArgumentParser) -> None:
    p.add_argument("lot", nargs="?", help="the lot the recall starts from")
    p.add_argument("--condition", nargs="+", metavar="WORD", help="TAG above|below LIMIT ...")
    p.add_argument("--device", help="only this device's tag (condition)")
    p.add_argument("--from", dest="start", help="condition: from (a date or a time)")
    p.add_argument("--to", dest="end", help="condition: to (a date, included, or a time)")


def _files(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["xlsx", "json"], default="xlsx")
    p.add_argument(
        "--tz", help="IANA time zone of the dates (default: the plant's, TRACE_PLANT_TIMEZONE)"
    )
    p.add_argument("-o", "--output", help="file to write (default: the server's name)")
    p.add_argument("--force", action="store_true", help="replace the file if it exists")


def parser(api_url: str) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="tracectl recall case",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="case_command", required=True)
    p = sub.add_parser("open", help="open a case from a lot or a condition")
    _origin(p)
    p.add_argument("--title", required=True)
    p.add_argument("--drill", action="store_true", help="a mock recall, not a real one")
    _common(p, api_url)
    p.set_defaults(func=cmd_open)
    p = sub.add_parser("list", help="cases, newest first")
    p.add_argument("--drills", action="store_true", help="only drills, with their times")
    _common(p, api_url)
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="a case as last recomputed")
    p.add_argument("case", type=int)
    p.add_argument("--recompute", action="store_true", help="recompute its set first (quality)")
    _common(p, api_url)
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("notify", help="record a customer told of the recall")
    p.add_argument("case", type=int)
    p.add_argument("customer", help="its id as the case lists it")
    p.add_argument("--by", required=True, help="who told them")
    p.add_argument(
        "--method",
        required=True,
        choices=["phone", "email", "letter", "fax", "edi", "in_person", "other"],
    )
    p.add_argument("--at", help="when (a time with its offset; default now)")
    p.add_argument("--contact", help="the person or address told")
    p.add_argument("--note")
    _common(p, api_url)
    p.set_defaults(func=cmd_notify)
    p = sub.add_parser("return", help="record goods a customer sent back")
    p.add_argument("case", type=int)
    p.add_argument("customer")
    p.add_argument("quantity", type=float)
    p.add_argument("uom")
    p.add_argument("--lot")
    p.add_argument("--at", help="when received (default now)")
    p.add_argument("--note")
    _common(p, api_url)
    p.set_defaults(func=cmd_return)
    p = sub.add_parser("place", help="record stock held or destroyed at a place")
    p.add_argument("case", type=int)
    p.add_argument("place")
    p.add_argument("action", choices=["held", "destroyed"])
    p.add_argument("quantity", type=float)
    p.add_argument("uom")
    p.add_argument("--lot")
    p.add_argument("--at", help="when (default now)")
    p.add_argument("--note")
    _common(p, api_url)
    p.set_defaults(func=cmd_place)
    p = sub.add_parser("hold", help="put every lot of the case on hold")
    p.add_argument("case", type=int)
    p.add_argument("--reason", required=True)
    _common(p, api_url, json_out=False)
    p.set_defaults(func=cmd_hold)
    p = sub.add_parser("close", help="close the case with a summary")
    p.add_argument("case", type=int)
    p.add_argument("--summary", required=True)
    _common(p, api_url)
    p.set_defaults(func=cmd_close)
    p = sub.add_parser("export", help="the case's record with its FSMA 204 spreadsheet")
    p.add_argument("case", type=int)
    _files(p)
    _common(p, api_url, json_out=False)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("drill", help="a mock recall: open, export, report the time")
    _origin(p)
    p.add_argument("--title", default="mock recall drill")
    _files(p)
    _common(p, api_url, json_out=False)
    p.set_defaults(func=cmd_drill)
    return top
