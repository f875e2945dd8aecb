"""The command: arguments, then build (unless --reuse), choose, measure and report."""

from __future__ import annotations

import argparse
import os
import sys
import time

import bench.genealogy
from bench.genealogy.answers import choose, plan
from bench.genealogy.build import bench_url, build, log
from bench.genealogy.report import code_measured, explain, report, server_settings
from bench.genealogy.workers import measure


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.genealogy",
        description=bench.genealogy.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--scale", type=float, default=1.0, help="share of the full data set (1,000,000 lots)")
    add("--seed", type=int, default=5)
    add("--lots", type=int, default=100, help="random ordinary lots, traced both ways")
    add("--recall-runs", type=int, default=3, help="raw lots for the 10k recall; 500k runs")
    add("--param-runs", type=int, default=10)
    add("--timeout", type=float, default=120.0, help="seconds one answer may take")
    add("--budget", type=float, default=300.0, help="seconds for each scenario's runs")
    add("--reuse", action="store_true", help="measure the trace_bench built last time")
    add("--no-explain", action="store_true")
    args = parser.parse_args()
    base = os.environ.get("TRACE_DATABASE_URL")
    if not base:
        sys.exit('TRACE_DATABASE_URL is not set: run eval "$(bash deploy/services.sh up)" first')
    url = bench_url(base)
    head = "Genealogy benchmark"
    if not args.reuse:
        counts, seconds = build(base, args.scale, args.seed)
        head += (
            f" at --scale {args.scale:g}: {counts['lots']:,} lots, {counts['lot_links']:,}"
            f" links, {counts['batches']:,} batches, {counts['readings']:,} readings,"
            f" generated and loaded in {seconds:.0f} s"
        )
    head += f"; code measured: {code_measured()}"
    t0 = time.perf_counter()
    t = choose(url, args.lots, args.recall_runs, args.seed)
    log(f"10k recall: lots reaching {[n for _, n in t.recall_10k]}", t0)
    results = measure(url, plan(t, args.recall_runs, args.param_runs), args.timeout, args.budget)
    lines = [
        f"### {head}",
        "",
        f"{len(t.ordinary)} random intermediate and finished lots, traced both ways; salt fills"
        f" reaching {', '.join(f'{n:,}' for _, n in t.recall_10k)} lots; the salt supplier lot"
        f" reaching {t.recall_500k[1]:,}; the fermentation batch's {t.batch_readings:,} readings."
        " Baseline: the bare walk (`trace.count_reachable`) over the same lot, run next to it;"
        " for batch parameters, a bare `count(*)` of the batch's readings.",
        "",
        *report(results, t, args.timeout),
        "",
        f"Server: {server_settings(url)}.",
    ]
    if not args.no_explain:
        lines += explain(url, results, args.timeout)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
