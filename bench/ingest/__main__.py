"""The command: identities and template, then per run the COPY and every load, then the
table, the checks and the JSON file."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

import bench.ingest
from bench.ingest import database
from bench.ingest.fleet import acknowledged_elsewhere, edge_name
from bench.ingest.measure import Load, Setup, collector_name, log, measure, measure_copy, timestamp
from bench.ingest.processes import pid_from_file
from bench.ingest.report import (
    Run,
    busy_generator,
    code_measured,
    problems,
    table,
    two_against_one,
    write_json,
)
from cloud_collector.broker_identities import BrokerFiles
from edge_agent.publisher import MAX_INFLIGHT_MESSAGES
from protocols.mqtt.connection import BrokerSettings

RESULTS = Path(__file__).resolve().parent.parent / "results"


def numbers(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more whole numbers >= 1")
    return values


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description=bench.ingest.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--edges", type=int, default=20, help="simulated edges, one line each")
    add("--tags", type=int, default=50, help="tags per line (readings per poll)")
    add("--readings", type=int, default=1_000_000, help="readings per measurement, over the fleet")
    add("--records", type=numbers, default=[500, 100], help="records per message, e.g. 500,100")
    add("--collectors", type=numbers, default=[1, 2], help="collector processes, e.g. 1,2")
    add("--runs", type=int, default=3, help="repetitions; figures are printed as min-max")
    add(
        "--window",
        type=int,
        default=MAX_INFLIGHT_MESSAGES,
        help="messages in flight per edge (default: the edge publisher's)",
    )
    add("--ack-timeout", type=float, default=10.0, help="seconds before an edge resends")
    add("--latency-rate", type=float, default=20_000, help="offered readings/s; 0: no latency run")
    add("--latency-seconds", type=float, default=10.0, help="length of the latency run")
    add("--linger", type=float, default=0.2, help="publisher linger at an offered rate (s)")
    add("--timeout", type=float, default=300.0, help="seconds one measurement may take")
    add("--out", type=Path, default=None, help="JSON file (default bench/results/ingest-*.json)")
    args = parser.parse_args()
    if args.edges < 1 or args.edges > 99 or args.tags < 1 or args.window < 1 or args.runs < 1:
        parser.error("--edges 1-99, --tags, --window and --runs at least 1")
    return args


async def run(args: argparse.Namespace, base_url: str, files: BrokerFiles) -> int:
    broker = BrokerSettings()
    edges = [edge_name(i) for i in range(1, args.edges + 1)]
    collectors = [collector_name(i) for i in range(1, max(args.collectors) + 1)]
    log(f"issuing {len(edges)} edge and {len(collectors)} collector identities")
    if found := database.replicas(base_url):
        log(
            f"the database cluster is replicated ({'; '.join(found)}): a standby takes cores "
            "and holds back the cleanup the measured ingest needs. Stop it first (bash "
            "deploy/services.sh standby down; make bench-ingest does) or measure on a cluster "
            "of its own."
        )
        return 2
    identities = await database.issue_identities(base_url, files, broker, edges, collectors)
    runs: list[Run] = []
    try:
        if await acknowledged_elsewhere(identities[edges[0]], 1):
            log(
                "a collector already consumes this broker's edge data (it acknowledged a probe "
                f"reading of {edges[0]}, line idle, now in its database): it would take the "
                "bench's readings too. Stop it (make stop) or give the bench a broker of its own."
            )
            return 2
        await database.make_template(base_url, edges)
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as logs:
            setup = Setup(
                base_url=base_url,
                broker_pid=pid_from_file(files.pid_file),
                identities=identities,
                edges=args.edges,
                tags=args.tags,
                window=args.window,
                ack_timeout_s=args.ack_timeout,
                linger_s=args.linger,
                logs=Path(logs),
                timeout_s=args.timeout,
            )
            loads = [Load(c, r, args.readings) for c in args.collectors for r in args.records]
            if args.latency_rate > 0:
                loads.append(
                    Load(
                        1,
                        args.records[0],
                        int(args.latency_rate * args.latency_seconds),
                        args.latency_rate,
                    )
                )
            copy_rows = 0
            for i in range(1, args.runs + 1):
                measured = []
                for load in loads:
                    # Each flat-out load between COPYs of its own, just before and just
                    # after it: the machine's speed drifts over the minutes of a run.
                    before = after = bulk_rate = None
                    if load.rate is None:
                        before, copy_rows = measure_copy(setup, args.readings, load.records)
                        bulk_rate, _ = measure_copy(setup, args.readings, None)
                        log(
                            f"run {i}: COPY {copy_rows:,} rows at {before:,.0f} readings/s "
                            f"in the fleet's order, {bulk_rate:,.0f} edge by edge"
                        )
                    m = await measure(setup, load)
                    if load.rate is None:
                        after, _ = measure_copy(setup, args.readings, load.records)
                        log(f"run {i}: COPY after it at {after:,.0f} readings/s")
                    m.copy_before, m.copy_after, m.bulk_copy_rate = before, after, bulk_rate
                    measured.append(m)
                    log(
                        f"run {i}: {load.label}: {m.rate:,.0f} readings/s"
                        + (f" ({m.rate / m.copy_rate:.2f} x COPY)" if m.copy_rate else "")
                        + f", p95 {m.latency_ms['p95']:,.0f} ms, cpu "
                        + ", ".join(f"{k} {v:.0f}%" for k, v in m.cpu_percent.items() if v)
                        + (f"; PROBLEM: {'; '.join(m.problems)}" if m.problems else "")
                    )
                runs.append(Run(copy_rows, measured))
    finally:
        await database.revoke_identities(base_url, files, [*edges, *collectors])
        database.drop_database(base_url, database.TEMPLATE_DB)
    lines = [
        f"### Ingest: {args.edges} edges x {args.tags} tags, {args.readings:,} readings per "
        f"measurement, {args.runs} run{'s' * (args.runs > 1)} (min-max); code: {code_measured()}",
        "",
        *table(runs),
        "",
        f"Window {args.window} messages per edge, ack timeout {args.ack_timeout:g} s; "
        f"{os.cpu_count()} cores shared by the generator, broker, PostgreSQL and collector(s).",
    ]
    lines += two_against_one(runs)
    found = problems(runs)
    lines.append(
        "Counted against `readings` after every measurement: "
        + ("missing 0, doubled 0, rows = readings acked." if not found else "PROBLEMS:")
    )
    lines += [f"- {p}" for p in found]
    busy = busy_generator(runs)
    if busy:
        lines.append(
            f"The generator used over 80% of its core ({'; '.join(busy)}): it may be the limit."
        )
    print("\n".join(lines))
    out = args.out or RESULTS / f"ingest-{timestamp()}.json"
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(out, settings, runs, lines)
    log(f"results: {out}")
    return 1 if found else 0


def main() -> None:
    args = arguments()
    base_url = os.environ.get("TRACE_DATABASE_URL")
    if not base_url:
        sys.exit('TRACE_DATABASE_URL is not set: run eval "$(bash deploy/services.sh up)" first')
    try:
        files = BrokerFiles()
    except ValidationError as err:
        sys.exit(f"TRACE_BROKER_* settings are invalid: {err}")
    if not files.configured or files.pid_file is None:
        sys.exit(
            "TRACE_BROKER_PASSWORD_FILE, TRACE_BROKER_ACL_FILE and TRACE_BROKER_PID_FILE are not "
            "set: the bench registers its edges with the broker; run "
            'eval "$(bash deploy/services.sh up)" first'
        )
    sys.exit(asyncio.run(run(args, base_url, files)))


if __name__ == "__main__":
    main()
