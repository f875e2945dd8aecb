"""Collector ingest throughput without the broker: messages of readings through the
consumer's own flow (read, group commit, ack) and through the one-by-one path every message
took before (ingest.ingest, one transaction each), beside a binary COPY of the same rows
into a table of `readings`' shape and indexes, in the same run.

    eval "$(bash deploy/services.sh up)"; .venv/bin/python bench/collector_ingest.py

It makes its own database (`--database`, `trace_bench_ingest`: dropped and migrated at
the start), so `readings` and the COPY's table start empty and grow alike. A run plays `--readings`
readings from `--edges` edges (their messages interleaved, as a fleet's arrive) at each
message size, taking turns: COPY, group commit, one by one. Each figure is the median of
`--runs` runs with their spread; the ratio is to the COPY of the same run. Beside the
rates, the CPU each path costs per reading, in this process and in its PostgreSQL backend
(read from /proc: the database must run on this machine): on a machine shared with other
work these are steadier than the rates, and they say where more cores would go. The
collector's CPU is also split by stage (STAGES: the thread CPU time spent in each of the
functions the flow calls; "rest" is the commit's statements, psycopg and asyncio).

    .venv/bin/python bench/collector_ingest.py --instructions

counts instead the instructions each stage executes (valgrind's callgrind, one pass over
`--readings` readings at each size): unlike times, these repeat to within a fraction of a
percent on a machine busy with other work, so they compare two versions of the code.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import psycopg

from cloud_collector import rollups
from cloud_collector.consumer import Flow, IngestCounters, Taken, handle
from cloud_collector.ingest import READING_COLUMNS, READING_TYPES
from cloud_collector.messages import Readings, read_readings
from cloud_collector.migrate import migrate
from cloud_collector.reading_rows import RowWriter
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from protocols.mqtt.contract import Ack

DATABASE = "trace_bench_ingest"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
# `readings` as migration 0001 makes it: a hypertable of 1-day chunks and its two indexes.
_COPY_TABLE = [
    "drop table if exists copy_reference",
    "create table copy_reference (like readings including defaults)",
    "select create_hypertable('copy_reference', by_range('time', interval '1 day'))",
    "create unique index on copy_reference (stream_id, seq, time)",
    "create index on copy_reference (batch_id, device, tag, time) where batch_id is not null",
]


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """CPU seconds a process has used (user + system)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Cost:
    """CPU microseconds per reading: this process, its PostgreSQL backend."""

    python: float
    postgres: float


class Meter:
    def __init__(self, backend: int) -> None:
        self.backend = backend

    def __enter__(self) -> Meter:
        self._start = (time.process_time(), _cpu_of(self.backend))
        return self

    def __exit__(self, *exc: object) -> None:
        self.spent = (
            time.process_time() - self._start[0],
            _cpu_of(self.backend) - self._start[1],
        )

    def per(self, readings: int) -> Cost:
        return Cost(self.spent[0] / readings * 1e6, self.spent[1] / readings * 1e6)


@dataclass
class Workload:
    size: int  # readings per message
    messages: list[tuple[str, bytes]]  # (topic, payload), edges interleaved
    rows: list[tuple[object, ...]]  # the same readings as COPY rows

    @property
    def readings(self) -> int:
        return len(self.rows)


def workload(run: int, size: int, readings: int, edges: int, tags: int) -> Workload:
    """About `readings` readings from `edges` edges (a new epoch per run: fresh numbers),
    at least one message per edge."""
    per_edge = max(readings // edges // size, 1)
    messages: list[tuple[str, bytes]] = []
    rows: list[tuple[object, ...]] = []
    received = datetime.now(UTC)
    for n in range(per_edge):
        for e in range(edges):
            edge = f"bench-edge-{e:02d}"
            records = []
            for seq in range(n * size, (n + 1) * size):
                time_ = T0 + timedelta(milliseconds=100 * seq)
                tag, value, batch = f"tag-{seq % tags}", seq * 0.5, f"BENCH-{run}-{e}"
                records.append(
                    {
                        "kind": "reading",
                        "seq": seq,
                        "time": time_.isoformat(),
                        "line": f"line-{e}",
                        "batch": batch,
                        "device": "plc-1",
                        "tag": tag,
                        "value": value,
                        "unit": "Cel",
                    }
                )
                rows.append(
                    (
                        *(time_, None, received, f"line-{e}", batch, "plc-1", tag, value),
                        *("Cel", "good", None, 1_000_000 * run + 1000 * size + e, seq, True),
                    )
                )
            body = {
                "edge_id": edge,
                "stream": "readings",
                "epoch": f"run-{run}-{size}",
                "records": records,
            }
            messages.append((topics.data(edge, "readings"), json.dumps(body).encode()))
    return Workload(size, messages, rows)


async def copy_reference(conn: psycopg.AsyncConnection, load: Workload) -> float:
    start = time.perf_counter()
    sql = f"copy copy_reference ({READING_COLUMNS}) from stdin (format binary)"
    async with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as cp:
        cp.set_types(READING_TYPES)
        for row in load.rows:
            await cp.write_row(row)
    return time.perf_counter() - start


def _messages(load: Workload) -> list[aiomqtt.Message]:
    return [
        aiomqtt.Message(topic, payload, qos=1, retain=False, mid=n + 1, properties=None)
        for n, (topic, payload) in enumerate(load.messages)
    ]


async def _count_ack(ack: Ack) -> None:
    ack.model_dump_json()  # what publishing it costs the collector, short of the socket


async def group_commit(
    conn: psycopg.AsyncConnection, settings: CollectorSettings, load: Workload
) -> tuple[float, IngestCounters]:
    """The consumer's grouper and committer over a backlog of the workload's messages."""
    counters = IngestCounters()
    messages = _messages(load)
    unsettled = len(messages)

    def settled(message: aiomqtt.Message) -> None:
        nonlocal unsettled
        unsettled -= 1

    flow = Flow(conn, settings, counters, _count_ack, settled)
    arrived: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    start = time.perf_counter()
    for message in messages:
        arrived.put_nowait(message)
    tasks = [
        asyncio.create_task(flow.group(arrived)),
        asyncio.create_task(flow.commit()),
    ]
    while unsettled > 0:
        await asyncio.sleep(0.002)
        for task in tasks:
            if task.done():
                task.result()
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert counters.rows_inserted == load.readings, counters
    return elapsed, counters


async def one_by_one(
    conn: psycopg.AsyncConnection, settings: CollectorSettings, load: Workload
) -> float:
    counters = IngestCounters()
    start = time.perf_counter()
    for message in _messages(load):
        await handle(conn, _count_ack, message, counters, settings)
    assert counters.rows_inserted == load.readings, counters
    return time.perf_counter() - start


@dataclass
class Figures:
    copy: list[float]
    group: list[float]
    alone: list[float]
    groups: list[float]  # messages per group commit
    costs: dict[str, list[Cost]]
    stages: dict[str, list[Cost]] = field(default_factory=dict)


# ---- The flow one stage at a time --------------------------------------------------------
# What the consumer's grouper and committer do to a group, each stage over the whole
# workload before the next: read (the fast reader), prepare (what the group commit makes of
# a message ahead of its transaction), commit (Flow.settle: the transaction, the COPY and the
# statements, the acks). The "of which" stages do a part of prepare again on its own.


def _groups(load: Workload, settings: CollectorSettings) -> list[list[int]]:
    """The workload's messages in groups as the grouper makes them from a backlog."""
    groups: list[list[int]] = [[]]
    records = 0
    for n in range(len(load.messages)):
        group = groups[-1]
        if group and (
            len(group) >= settings.ingest_group_messages or records >= settings.ingest_group_records
        ):
            groups.append(group := [])
            records = 0
        group.append(n)
        records += load.size
    return groups


class StagePass:
    """The stages over one workload; each method is one stage, in this order."""

    def __init__(self, flow: Flow, load: Workload) -> None:
        self.settings = flow.settings
        self.load = load
        self.messages = _messages(load)
        self.groups = _groups(load, flow.settings)
        self.flow = flow
        self.readings: list[Readings] = []
        self.taken: list[list[Taken]] = []

    def read(self) -> None:
        self.flow.counters = IngestCounters()
        now = datetime.now(UTC)
        skew = timedelta(seconds=self.settings.max_skew_s)
        limit = self.settings.max_message_bytes
        for topic, payload in self.load.messages:
            readings = read_readings(topic, payload, now, skew, limit)
            assert readings is not None, "the workload's messages are fresh readings"
            self.readings.append(readings)

    def prepare(self) -> None:
        committer = self.flow.committer
        for group in self.groups:
            parts = rollups.Parts()
            self.taken.append(
                [Taken(self.messages[n], committer.prepare(self.readings[n], parts)) for n in group]
            )

    def of_which_rollups(self) -> None:
        for group in self.groups:
            parts = rollups.Parts()
            for n in group:
                parts.add(self.readings[n].records)
            parts.stats_arrays({})
            parts.minutes_arrays()

    def of_which_rows(self) -> None:
        backfill = timedelta(seconds=self.settings.backfill_after_s)
        writer = RowWriter()
        for r in self.readings:
            writer.rows(r.records, 1, r.received, r.received - backfill)

    async def commit(self) -> None:
        for taken in self.taken:
            await self.flow.settle(taken)
        counters = self.flow.counters
        assert counters.rows_inserted == self.load.readings, counters


STAGES = ["read", "prepare", "of_which_rollups", "of_which_rows", "commit"]


def warmed(
    conn: psycopg.AsyncConnection, settings: CollectorSettings, load: Workload
) -> tuple[StagePass, StagePass]:
    """The first message of each edge to go first, unmeasured (its streams are then known,
    as they are to a collector that has been running), and the rest."""
    edges = len({topic for topic, _ in load.messages})
    first = Workload(load.size, load.messages[:edges], load.rows[: edges * load.size])
    rest = Workload(load.size, load.messages[edges:], load.rows[edges * load.size :])
    assert rest.messages, "two messages per edge at least: raise --readings"
    flow = Flow(conn, settings, IngestCounters(), _count_ack, lambda _: None)
    return StagePass(flow, first), StagePass(flow, rest)


async def stage_costs(
    conn: psycopg.AsyncConnection, settings: CollectorSettings, load: Workload, meter: Meter
) -> dict[str, Cost]:
    warm, stages = warmed(conn, settings, load)
    for name in STAGES:
        step = getattr(warm, name)
        await step() if asyncio.iscoroutinefunction(step) else step()
    load = stages.load
    costs: dict[str, Cost] = {}
    for name in STAGES:
        step = getattr(stages, name)
        with meter:
            if asyncio.iscoroutinefunction(step):
                await step()
            else:
                step()
        costs[name] = meter.per(load.readings)
    return costs


async def measure(url: str, args: argparse.Namespace) -> dict[int, Figures]:
    settings = CollectorSettings(database_url=url)
    figures = {
        s: Figures([], [], [], [], {"copy": [], "group": [], "alone": []}) for s in args.sizes
    }
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for statement in _COPY_TABLE:
            await conn.execute(statement)  # type: ignore[arg-type]
        row = await (await conn.execute("select pg_backend_pid()")).fetchone()
        meter = Meter(int(row[0]) if row else 0)
        for run in range(args.runs):
            for size in args.sizes:
                load = workload(run, size, args.readings, args.edges, args.tags)
                f = figures[size]
                with meter:
                    f.copy.append(load.readings / await copy_reference(conn, load))
                f.costs["copy"].append(meter.per(load.readings))
                with meter:
                    elapsed, counters = await group_commit(conn, settings, load)
                f.costs["group"].append(meter.per(load.readings))
                f.group.append(load.readings / elapsed)
                f.groups.append(counters.grouped / max(counters.groups, 1))
                readings = max(args.readings, 2 * args.edges * size)
                staged = workload(run + 2000, size, readings, args.edges, args.tags)
                for name, cost in (await stage_costs(conn, settings, staged, meter)).items():
                    f.stages.setdefault(name, []).append(cost)
                if not args.skip_one_by_one:
                    alone = workload(run + 1000, size, args.readings // 4, args.edges, args.tags)
                    with meter:
                        rate = alone.readings / await one_by_one(conn, settings, alone)
                    f.alone.append(rate)
                    f.costs["alone"].append(meter.per(alone.readings))
                print(
                    f"run {run + 1} size {size}: COPY {f.copy[-1]:,.0f}/s, group commit "
                    f"{f.group[-1]:,.0f}/s ({f.group[-1] / f.copy[-1]:.2f} x), "
                    f"{f.costs['group'][-1].python:.1f} us CPU per reading ("
                    + ", ".join(f"{n} {c[-1].python:.2f}" for n, c in f.stages.items())
                    + ")"
                    + (
                        f", one by one {f.alone[-1]:,.0f}/s ({f.alone[-1] / f.copy[-1]:.2f} x)"
                        if f.alone
                        else ""
                    ),
                    flush=True,
                )
    return figures


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def _ratios(values: list[float], copy: list[float]) -> str:
    ratios = [v / c for v, c in zip(values, copy, strict=True)]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def _cost(costs: list[Cost]) -> str:
    python = statistics.median(c.python for c in costs)
    postgres = statistics.median(c.postgres for c in costs)
    return f"{python:.1f} | {postgres:.1f}"


def _range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(figures: dict[int, Figures], runs: int) -> None:
    print(f"\nreadings/s, median (min-max) of {runs} runs; x = per run, to that run's COPY;")
    print("CPU: microseconds per reading in this process and in its PostgreSQL backend")
    print(
        "| records/msg | path | messages/s | readings/s | x same-run COPY "
        "| CPU collector | CPU postgres |"
    )
    print("|---|---|---|---|---|---|---|")
    for size, f in figures.items():
        print(f"| {size} | binary COPY | | {_spread(f.copy)} | 1.00 | {_cost(f.costs['copy'])} |")
        print(
            f"| {size} | group commit ({statistics.median(f.groups):.0f} msgs/group) | "
            f"{_spread([g / size for g in f.group])} | {_spread(f.group)} | "
            f"{_ratios(f.group, f.copy)} | {_cost(f.costs['group'])} |"
        )
        if f.alone:
            print(
                f"| {size} | one by one | {_spread([a / size for a in f.alone])} | "
                f"{_spread(f.alone)} | {_ratios(f.alone, f.copy)} | {_cost(f.costs['alone'])} |"
            )
    print(
        f"\nCPU microseconds per reading by stage, one stage at a time, median (min-max) of {runs}"
    )
    print("| records/msg | stage | collector | postgres |")
    print("|---|---|---|---|")
    for size, f in figures.items():
        for name, costs in f.stages.items():
            python = _range([c.python for c in costs])
            postgres = _range([c.postgres for c in costs])
            print(f"| {size} | {name.replace('_', ' ')} | {python} | {postgres} |")
        flow = [c.python for c in f.costs["group"]]
        print(f"| {size} | the flow as it runs (all stages, asyncio) | {_range(flow)} | |")


# ---- Instructions: the stages under callgrind --------------------------------------------
# Each stage runs as a ctypes callback: callgrind counts only inside _ctypes_callproc and
# dumps the count when it returns, one file per stage, so the interpreter's start, the
# imports and the workload's making are not counted.
_UNDER_CALLGRIND = "BENCH_COLLECTOR_INGEST_UNDER_CALLGRIND"
_CALLBACK = ctypes.CFUNCTYPE(None)


def _counted(step: Callable[[], None]) -> None:
    failed: list[BaseException] = []

    def run() -> None:
        try:
            step()
        except BaseException as err:  # a ctypes callback would print it and go on
            failed.append(err)

    _CALLBACK(run)()
    if failed:
        raise failed[0]


def _run_in(runner: asyncio.Runner, step: Callable[[], Awaitable[None]]) -> None:
    runner.run(step())  # type: ignore[arg-type]


def counted_stages(url: str, args: argparse.Namespace) -> None:
    """Under callgrind: each stage at each size once; prints the stages in the order their
    counts were dumped."""
    settings = CollectorSettings(database_url=url)
    shape = (max(args.readings, 2 * args.edges * max(args.sizes)), args.edges, args.tags)
    with asyncio.Runner() as runner:
        conn = runner.run(psycopg.AsyncConnection.connect(url, autocommit=True))
        for size in args.sizes:
            warm, stages = warmed(conn, settings, workload(0, size, *shape))
            for name in STAGES:
                step = getattr(warm, name)
                runner.run(step()) if asyncio.iscoroutinefunction(step) else step()
            load = stages.load
            for name in STAGES:
                step = getattr(stages, name)
                if asyncio.iscoroutinefunction(step):
                    _counted(functools.partial(_run_in, runner, step))
                else:
                    _counted(step)
                print(json.dumps({"size": size, "stage": name, "readings": load.readings}))
        runner.run(conn.close())


def instructions(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as out:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=_ctypes_callproc",
            "--dump-after=_ctypes_callproc",
            f"--callgrind-out-file={out}/callgrind.out",
            sys.executable,
            *sys.argv,
        ]
        env = {**os.environ, _UNDER_CALLGRIND: "1", "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"callgrind failed ({done.returncode}):\n{done.stderr[-3000:]}")
        stages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        counts = []
        for n in range(1, len(stages) + 1):
            text = Path(f"{out}/callgrind.out.{n}").read_text()
            totals = [line for line in text.splitlines() if line.startswith("totals:")]
            counts.append(int(totals[0].split()[1]))
    print("instructions per reading by stage (callgrind, PYTHONHASHSEED=0)")
    print("| records/msg | stage | instructions per reading |")
    print("|---|---|---|")
    for stage, count in zip(stages, counts, strict=True):
        name = stage["stage"].replace("_", " ")
        print(f"| {stage['size']} | {name} | {count / stage['readings']:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=100_000, help="per size and run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 100])
    parser.add_argument("--edges", type=int, default=20)
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-one-by-one", action="store_true")
    parser.add_argument("--database", default=DATABASE, help="made afresh (dropped first)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count each stage's instructions under valgrind's callgrind instead of timing",
    )
    args = parser.parse_args()
    base = CollectorSettings().database_url
    url = base.rsplit("/", 1)[0] + "/" + args.database
    if os.environ.get(_UNDER_CALLGRIND):
        counted_stages(url, args)
        return
    with psycopg.connect(base.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f"drop database if exists {args.database} with (force)")
        admin.execute(f"create database {args.database}")
    migrate(url)
    if args.instructions:
        instructions(args)
        return
    report(asyncio.run(measure(url, args)), args.runs)


if __name__ == "__main__":
    main()
