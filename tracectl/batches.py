"""`tracectl batches`: the recent batches of every line (GET /api/v1/batches), newest first."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime
from typing import Any

from tracectl.collector_api import CollectorApi, CommandError
from tracectl.tables import duration, table, when

# The API's own bound on one listing.
MOST = 1000


def _started_on_or_after(batch: dict[str, Any], day: date) -> bool:
    started = batch.get("started_at")
    return started is not None and datetime.fromisoformat(started).astimezone().date() >= day


def cmd_batches(args: argparse.Namespace) -> None:
    since = None
    if args.since:
        try:
            since = date.fromisoformat(args.since)
        except ValueError:
            raise CommandError(
                f"--since {args.since!r} is not a date: e.g. --since 2026-11-25"
            ) from None
    filtering = args.line or since
    batches = CollectorApi(args.api).get_json(
        "/api/v1/batches", params={"limit": MOST if filtering else args.limit}
    )
    batches = [
        b
        for b in batches
        if (not args.line or b["line_id"] == args.line)
        and (since is None or _started_on_or_after(b, since))
    ][: args.limit]
    if args.json:
        print(json.dumps(batches, indent=2))
        return
    if not batches:
        print("no batches" + (" match" if filtering else " yet"))
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
                b["edge_id"],
                when(started),
                when(ended) if ended else "running",
                length,
                b.get("started_by"),
            ]
        )
    print(table(["BATCH", "LINE", "EDGE", "STARTED", "ENDED", "LENGTH", "BY"], rows))
    print(f"{len(batches)} batch(es); one in detail: tracectl parameters BATCH")


def add_parser(sub: argparse._SubParsersAction, api_url: str) -> None:  # type: ignore[type-arg]
    batches = sub.add_parser("batches", help="recent batches of every line, newest first")
    batches.add_argument("--line", help="only this line's")
    batches.add_argument("--since", help="only those started on or after this date (YYYY-MM-DD)")
    batches.add_argument("--limit", type=int, default=50, choices=range(1, MOST + 1), metavar="N")
    batches.add_argument(
        "--api", default=None, help=f"collector API URL (TRACE_API_URL, {api_url})"
    )
    batches.add_argument("--json", action="store_true", help="the API's answer as it is")
    batches.set_defaults(func=cmd_batches)
