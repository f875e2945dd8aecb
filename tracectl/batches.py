"""`tracectl batches`: the batches of every line, newest first, filtered by the API itself
(GET /api/v1/batches: line, product, start dates, had an excursion), times in the plant's
time zone."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, time, timedelta
from typing import Any

from tracectl.collector_api import CollectorApi, CommandError
from tracectl.tables import duration, plant_zone, table, when, zone_note

# The API's own bound on one listing.
MOST = 1000


def _day(text: str | None, option: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option} {text!r} is not a date: e.g. {option} 2026-11-25") from None


def query(args: argparse.Namespace) -> dict[str, Any]:
    """The API's filters for the command's options: --from and --to are whole days of the
    plant (TRACE_PLANT_TIMEZONE), --to included."""
    zone = plant_zone()
    first, last = _day(args.start, "--from"), _day(args.end, "--to")
    params: dict[str, Any] = {"limit": args.limit}
    if args.line:
        params["line"] = args.line
    if args.product:
        params["product"] = args.product
    if first:
        params["from"] = datetime.combine(first, time(), zone).isoformat()
    if last:
        params["to"] = datetime.combine(last + timedelta(days=1), time(), zone).isoformat()
    if args.excursion:
        params["excursion"] = "true"
    return params


def cmd_batches(args: argparse.Namespace) -> None:
    params = query(args)
    batches = CollectorApi(args.api).get_json("/api/v1/batches", params=params)
    if args.json:
        print(json.dumps(batches, indent=2))
        return
    if not batches:
        print("no batches" + (" match" if len(params) > 1 else " yet"))
        return
    rows = []
    for b in batches:
        started, ended = b.get("started_at"), b.get("ended_at")
        length = None
        if started and ended:
            length = duration(
                (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
            )
        rows.append(
            [
                b["batch_id"],
                b["line_id"],
                when(started),
                when(ended) if ended else "running",
                length,
                ", ".join(b.get("products", [])) or "-",
                b.get("readings"),
                b.get("excursions") or None,
            ]
        )
    headers = ["BATCH", "LINE", "STARTED", "ENDED", "LENGTH", "PRODUCTS", "READINGS", "EXCURSIONS"]
    print(table(headers, rows))
    print(f"{len(batches)} batch(es), {zone_note()}; one in detail: tracectl parameters BATCH")


def add_parser(sub: argparse._SubParsersAction, api_url: str) -> None:  # type: ignore[type-arg]
    batches = sub.add_parser("batches", help="batches of every line, newest first, filtered")
    batches.add_argument("--line", help="only this line's")
    batches.add_argument("--product", help="only those that made it (a GTIN, or part of a name)")
    batches.add_argument(
        "--from",
        "--since",
        dest="start",
        metavar="DAY",
        help="only those started on or after this day of the plant (YYYY-MM-DD)",
    )
    batches.add_argument(
        "--to", dest="end", metavar="DAY", help="only those started on or before this day"
    )
    batches.add_argument(
        "--excursion", action="store_true", help="only those with a reading outside its limits"
    )
    batches.add_argument("--limit", type=int, default=50, choices=range(1, MOST + 1), metavar="N")
    batches.add_argument(
        "--api", default=None, help=f"collector API URL (TRACE_API_URL, {api_url})"
    )
    batches.add_argument("--json", action="store_true", help="the API's answer as it is")
    batches.set_defaults(func=cmd_batches)
