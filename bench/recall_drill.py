"""A mock-recall drill on the genealogy benchmark's plant (bench/genealogy): open a drill
case from the salt fill lot (a raw lot) whose forward trace is nearest --reach lots, build its
complete export (the case's record and the FSMA 204 sortable spreadsheet, XLSX and JSON),
and report each step's time and the time from opening to the complete export, as
`GET /api/v1/recall-cases/drills` reports it. Then a recomputation of the open case.

    eval "$(bash deploy/services.sh up)"
    .venv/bin/python -m bench.recall_drill --scale 0.1     # builds trace_bench first
    .venv/bin/python -m bench.recall_drill --reuse         # the trace_bench built last time
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from zoneinfo import ZoneInfo

import psycopg

from bench.genealogy.build import bench_url, build
from bench.genealogy.plant import SALT_GTIN
from cloud_collector import queries, recall_cases, trace


async def drill(url: str, lot_id: int, reached: int) -> list[str]:
    zone = ZoneInfo("America/Chicago")
    options = queries.session_options(600.0)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options=options) as c:
        lot = await trace.resolve(c, str(lot_id))
        t0 = time.perf_counter()
        case_id = await recall_cases.open_case(c, "bench drill", "bench", lot, drill=True)
        t_open = time.perf_counter()
        record = await recall_cases.case_record(c, case_id)
        body, rows = await recall_cases.as_xlsx(c, record, zone)
        await recall_cases.exported(c, case_id, "bench", {"format": "xlsx", "fsma204_rows": rows})
        t_xlsx = time.perf_counter()
        as_json = await recall_cases.as_json(c, record, zone)
        size = len(as_json.model_dump_json())
        t_json = time.perf_counter()
        await recall_cases.refresh(c, case_id)
        t_refresh = time.perf_counter()
        [case] = [x for x in await recall_cases.cases(c, "all", True) if x.case_id == case_id]
        await recall_cases.close(c, case_id, "bench drill done", "bench")
    members = len(record.members)
    return [
        f"drill case {case_id} from lot {lot_id} (reaching {reached:,} lots): {members:,} members",
        f"- open (recall, reachable, store members): {t_open - t0:.2f} s",
        f"- complete XLSX export ({rows:,} FSMA 204 rows, {len(body) / 1e6:.1f} MB): "
        f"{t_xlsx - t_open:.2f} s",
        f"- JSON export ({size / 1e6:.1f} MB): {t_json - t_xlsx:.2f} s",
        f"- recomputation of the open case, nothing new: {t_refresh - t_json:.2f} s",
        f"- time from opening to the complete export, as the case records it: "
        f"{case.time_to_export_s:.2f} s (within 24 h: {case.within_24h})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recall_drill", description=__doc__)
    parser.add_argument("--scale", type=float, default=0.1, help="of bench.genealogy's plant")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="the trace_bench built last time")
    parser.add_argument("--reach", type=int, default=10_000, help="lots the drill's lot reaches")
    args = parser.parse_args()
    base = os.environ.get("TRACE_DATABASE_URL")
    if not base:
        sys.exit('TRACE_DATABASE_URL is not set: run eval "$(bash deploy/services.sh up)" first')
    if not args.reuse:
        counts, seconds = build(base, args.scale, args.seed)
        print(f"trace_bench at --scale {args.scale:g}: {counts['lots']:,} lots in {seconds:.0f} s")
    url = bench_url(base)
    lot_id, reached = asyncio.run(_salt_fill(url, args.reach))
    print("\n".join(asyncio.run(drill(url, lot_id, reached))))


async def _salt_fill(url: str, reach: int) -> tuple[int, int]:
    """The salt fill lot (a raw lot made here) whose forward trace is nearest `reach` lots."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
        cur = await c.execute(
            "select lot_id from lots where gtin = %s and origin = 'own' order by lot_id limit 200",
            (SALT_GTIN,),
        )
        sizes = [(x, await trace.count_reachable(c, x, "forward")) for (x,) in await cur.fetchall()]
    if not sizes:
        sys.exit("no salt fill lot: was trace_bench built by bench.genealogy?")
    return min(sizes, key=lambda s: abs(s[1] - reach))


if __name__ == "__main__":
    main()
