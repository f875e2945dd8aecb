"""`tracectl export fsma`: an FDA FSMA 204 sortable spreadsheet from the collector, saved to a
file as it streams, with a progress line for long exports. The file appears only once it
is complete (written as NAME.part, then renamed): a broken-off export leaves no file that
looks whole."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

from tracectl.collector_api import CollectorApi, CommandError
from tracectl.genealogy import lot_path
from tracectl.tables import plant_zone, safe

_FILENAME = re.compile(r'filename="([^"]+)"')


class Progress:
    """One line on stderr, rewritten at most ten times a second: bytes, rows, rate, and the
    share done when the size is known (XLSX); CSV streams without one."""

    def __init__(self, out: IO[str], total: int | None, shown: bool) -> None:
        self.out, self.total, self.shown = out, total, shown
        self.bytes = self.rows = 0
        self.started = self.last = time.monotonic()

    def add(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        self.rows += chunk.count(b"\n")
        now = time.monotonic()
        if self.shown and now - self.last >= 0.1:
            self.last = now
            self._draw(end="\r")

    def _draw(self, end: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        text = (
            f"{self.bytes / 1e6:8.1f} MB  {self.bytes / 1e6 / elapsed:6.1f} MB/s  {elapsed:5.0f} s"
        )
        if self.total:
            share = min(self.bytes / self.total, 1.0)
            filled = int(share * 30)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} " + text
        else:
            text = f"{self.rows:10,} rows " + text
        self.out.write(text + end)
        self.out.flush()

    def done(self) -> None:
        if self.shown:
            self._draw(end="\n")


def _request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"format": args.format, "tz": args.tz or plant_zone().key}
    if args.product:
        if args.lot or args.recall or not (args.start and args.end):
            raise CommandError(
                "export fsma --product GTIN takes --from and --to (dates) and no lot: "
                "tracectl export fsma --product 09506000134352 --from 2026-11-01 --to 2026-11-30"
            )
        params |= {"from": args.start, "to": args.end}
        return f"/api/v1/fsma204/products/{lot_path(args.product)}", params
    if not args.lot:
        raise CommandError(
            "export fsma takes a lot (with --recall: everything downstream of it) or --product: "
            "tracectl export fsma LOT [--recall]"
        )
    path = f"/api/v1/fsma204/lots/{lot_path(args.lot)}"
    return (path + "/recall" if args.recall else path), params


def _target(output: str | None, fallback: str, response: httpx.Response) -> Path:
    if output:
        return Path(output)
    found = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = found.group(1) if found else fallback
    # The server's name, but never a path: only the file's own name in this folder.
    return Path(re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name) or fallback)


def download(
    api: CollectorApi,
    path: str,
    params: dict[str, Any],
    output: str | None,
    fallback: str,
    force: bool = False,
    progress: bool | None = None,
) -> tuple[Path, Progress]:
    """Save a GET's answer to `output` (default: the server's name, else `fallback`), whole
    or not at all; the file and how much was saved."""
    shown = progress if progress is not None else sys.stderr.isatty()
    with api.stream(path, params) as response:
        target = _target(output, fallback, response)
        if target.exists() and not force:
            raise CommandError(f"{target} exists: choose another name with -o, or --force")
        size = response.headers.get("content-length")
        counted = Progress(sys.stderr, int(size) if size and size.isdigit() else None, shown)
        partial = target.with_name(target.name + ".part")
        try:
            with open(partial, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    counted.add(chunk)
                out.flush()
                os.fsync(out.fileno())
        except httpx.HTTPError as err:
            partial.unlink(missing_ok=True)
            raise CommandError(
                f"the export broke off after {counted.bytes:,} bytes ({type(err).__name__}: "
                f"{err}); nothing was saved: run it again (a large recall: CSV streams, XLSX "
                "is built whole first)"
            ) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
    counted.done()
    return target, counted


def cmd_export(args: argparse.Namespace) -> None:
    path, params = _request(args)
    api = CollectorApi(args.api)
    fallback = f"fsma204.{args.format}"
    target, progress = download(api, path, params, args.output, fallback, args.force, args.progress)
    what = f"{progress.rows:,} lines" if args.format == "csv" else f"{progress.bytes:,} bytes"
    print(f"saved {safe(str(target))} ({what})")


def add_parser(sub: argparse._SubParsersAction, api_url: str) -> None:  # type: ignore[type-arg]
    export = sub.add_parser("export", help="downloads from the collector")
    kinds = export.add_subparsers(dest="export_kind", required=True)
    fsma = kinds.add_parser(
        "fsma",
        help="FDA FSMA 204 sortable spreadsheet of a lot, a recall or a product's days",
    )
    fsma.add_argument("lot", nargs="?", help="the traceability lot (what the trace API takes)")
    fsma.add_argument("--recall", action="store_true", help="every lot downstream of it too")
    fsma.add_argument("--product", metavar="GTIN", help="every lot of a product in --from..--to")
    fsma.add_argument("--from", dest="start", help="--product: first day (YYYY-MM-DD)")
    fsma.add_argument("--to", dest="end", help="--product: last day, included")
    fsma.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    fsma.add_argument(
        "--tz", help="IANA time zone of the dates (default: the plant's, TRACE_PLANT_TIMEZONE)"
    )
    fsma.add_argument("-o", "--output", help="file to write (default: the server's name)")
    fsma.add_argument("--force", action="store_true", help="replace the file if it exists")
    fsma.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show the progress line (default: when stderr is a terminal)",
    )
    fsma.add_argument("--api", default=None, help=f"collector API URL (TRACE_API_URL, {api_url})")
    fsma.set_defaults(func=cmd_export)
