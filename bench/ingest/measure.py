"""One measurement: a fresh database, the collector process(es) started on it, the fleet
played through the broker, the CPU of every process read around it, and the table counted
against what the acks said."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.ingest import database
from bench.ingest.database import Tally
from bench.ingest.fleet import EdgeTally, SimulatedEdge, edge_name
from bench.ingest.processes import (
    CollectorProcess,
    CpuMeter,
    forget_session,
    peak_rss_bytes,
    postmaster_of,
    start_collector,
    stop_collector,
    until_consuming,
)
from protocols.mqtt.connection import BrokerSettings

BATCH = "BENCH-INGEST-1"


def collector_name(index: int) -> str:
    return f"bench-collector-{index}"


@dataclass(frozen=True)
class Setup:
    """What every measurement of one invocation shares."""

    base_url: str  # TRACE_DATABASE_URL: the cluster the bench's databases are made on
    broker_pid: int | None  # for its CPU; None: not on this host
    identities: dict[str, BrokerSettings]  # every edge's and collector's
    edges: int
    tags: int
    window: int
    ack_timeout_s: float
    linger_s: float
    logs: Path
    timeout_s: float
    bench_db: str = database.BENCH_DB  # made afresh for each measurement
    template_db: str = database.TEMPLATE_DB


@dataclass(frozen=True)
class Load:
    collectors: int
    records: int  # records per message (at most, at an offered rate)
    readings: int  # over the fleet
    rate: float | None = None  # offered readings/s over the fleet; None: flat out

    @property
    def label(self) -> str:
        how = "flat out" if self.rate is None else f"at {self.rate:,.0f} readings/s"
        return f"{self.collectors} collector(s), {self.records} records per message, {how}"


@dataclass
class Measurement:
    load: Load
    sent: int
    committed: int
    refused: int
    messages: int
    resent_messages: int
    late_acks: int
    bad_acks: int
    seconds: float  # first message sent to last ack
    latency_ms: dict[str, float]  # p50, p95, p99 from reading time to ack, per reading
    cpu_percent: dict[str, float | None]  # per process (group), % of one core
    peak_rss_mb: dict[str, float | None]  # per collector process
    tally: Tally
    dead_letters: int
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    # readings/s of COPYs of its rows (flat-out loads): in the order the fleet sends them,
    # just before it and just after it (its baseline is their mean: the machine's speed
    # drifts by up to a quarter within minutes), and edge by edge (a bulk load's order)
    # just before it
    copy_before: float | None = None
    copy_after: float | None = None
    bulk_copy_rate: float | None = None

    @property
    def copy_rate(self) -> float | None:
        """The baseline: the mean of the COPYs around it (the one there is, if one)."""
        rates = [r for r in (self.copy_before, self.copy_after) if r is not None]
        return sum(rates) / len(rates) if rates else None

    @property
    def rate(self) -> float:
        return self.committed / self.seconds if self.seconds > 0 else 0.0

    @property
    def problems(self) -> list[str]:
        """What breaks 'nothing lost, nothing doubled' in this measurement."""
        found = []
        t = self.tally
        if t.missing or t.doubled or t.unexpected:
            found.append(f"missing {t.missing}, doubled {t.doubled}, unexpected {t.unexpected}")
        if t.rows != self.committed:
            found.append(f"the table holds {t.rows:,} rows, the acks said {self.committed:,}")
        if self.committed + self.refused != self.sent:
            found.append(f"{self.sent - self.committed - self.refused:,} readings never settled")
        if self.refused:
            found.append(f"{self.refused:,} readings refused by the collector")
        if self.dead_letters:
            found.append(f"{self.dead_letters} dead letters")
        return found

    def as_json(self) -> dict[str, object]:
        out = asdict(self)
        out["rate"] = self.rate
        out["copy_rate"] = self.copy_rate
        out["problems"] = self.problems
        return out


def percentiles(samples: list[tuple[float, int]], qs: tuple[float, ...]) -> dict[str, float]:
    """Weighted percentiles (value, weight) in ms, by the nearest-rank rule."""
    if not samples:
        return {f"p{round(q * 100)}": float("nan") for q in qs}
    ordered = sorted(samples)
    total = sum(w for _, w in ordered)
    out = {}
    for q in qs:
        rank, seen = q * total, 0
        for value, weight in ordered:
            seen += weight
            if seen >= rank:
                out[f"p{round(q * 100)}"] = value * 1000
                break
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(what: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {what}", file=sys.stderr, flush=True)


async def measure(setup: Setup, load: Load) -> Measurement:
    """Play `load` into fresh collector process(es) on a fresh database."""
    url = database.fresh_database(setup.base_url, setup.bench_db, setup.template_db)
    share_group = f"bench-{secrets.token_hex(4)}"  # no member of an earlier run in it
    names = [collector_name(i) for i in range(1, load.collectors + 1)]
    for name in names:
        await forget_session(setup.identities[name])
    collectors = [
        start_collector(
            name,
            setup.identities[name],
            url,
            share_group,
            free_port(),
            setup.logs / f"{name}.log",
        )
        for name in names
    ]
    try:
        await until_consuming(collectors)
        groups = {c.name: (c.pid, False) for c in collectors}
        if setup.broker_pid is not None:
            groups["broker"] = (setup.broker_pid, False)
        database.checkpoint(url)  # each timed phase starts with no dirty pages of another
        postmaster = postmaster_of(database.backend_pid(url))
        if postmaster is not None:
            groups["postgres"] = (postmaster, True)
        groups["generator"] = (os.getpid(), False)
        meter = CpuMeter(groups)
        tallies, cpu = await _play(setup, load, meter, collectors)
        rss = {c.name: _mb(peak_rss_bytes(c.pid)) for c in collectors}
    finally:
        for c in collectors:
            stop_collector(c)
        for name in names:
            await forget_session(setup.identities[name])
    with psycopg.connect(url) as conn:
        expected = {edge_name(i): t.readings for i, t in enumerate(tallies, start=1)}
        found = database.tally(conn, expected)
        dead = database.dead_letters(conn)
    latencies = [s for t in tallies for s in t.latencies]
    first = min(t.first_send for t in tallies)
    last = max(t.last_ack for t in tallies)
    return Measurement(
        load=load,
        sent=sum(t.readings for t in tallies),
        committed=sum(t.committed for t in tallies),
        refused=sum(t.refused for t in tallies),
        messages=sum(t.messages for t in tallies),
        resent_messages=sum(t.resent_messages for t in tallies),
        late_acks=sum(t.late_acks for t in tallies),
        bad_acks=sum(t.bad_acks for t in tallies),
        seconds=max(0.0, last - first),
        latency_ms=percentiles(latencies, (0.5, 0.95, 0.99)),
        cpu_percent=cpu,
        peak_rss_mb=rss,
        tally=found,
        dead_letters=dead,
    )


async def _play(
    setup: Setup, load: Load, meter: CpuMeter, collectors: list[CollectorProcess]
) -> tuple[list[EdgeTally], dict[str, float | None]]:
    per_edge = max(setup.tags, load.readings // setup.edges)
    edges = [
        SimulatedEdge(
            i,
            setup.identities[edge_name(i)],
            setup.tags,
            BATCH,
            load.records,
            setup.window,
            setup.ack_timeout_s,
            setup.linger_s if load.rate is not None else 0.0,
        )
        for i in range(1, setup.edges + 1)
    ]
    connected = asyncio.Barrier(len(edges) + 1)
    rate = None if load.rate is None else load.rate / len(edges)
    runs = [asyncio.create_task(e.run(connected, per_edge, rate)) for e in edges]
    try:
        async with asyncio.timeout(30):
            await connected.wait()
    except TimeoutError:
        for r in runs:
            if r.done() and r.exception():
                raise r.exception() from None  # type: ignore[misc]
        raise RuntimeError("the fleet's edges did not all connect within 30 s") from None
    start = meter.read()
    watch = asyncio.create_task(_watch(collectors))
    try:
        async with asyncio.timeout(setup.timeout_s):
            done = asyncio.gather(*runs)
            waiters: list[asyncio.Future[Any]] = [done, watch]
            finished, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if watch in finished:
                watch.result()
            tallies = list(await done)
    except TimeoutError:
        settled = sum(e.tally.committed + e.tally.refused for e in edges)
        made = sum(e.tally.readings for e in edges)
        raise RuntimeError(
            f"{load.label}: {settled:,} of {made:,} readings settled after "
            f"{setup.timeout_s:.0f} s (--timeout); collector logs in {setup.logs}"
        ) from None
    finally:
        watch.cancel()
        for r in runs:
            r.cancel()
    end = meter.read()
    return tallies, CpuMeter.percent(start, end)


async def _watch(collectors: list[CollectorProcess]) -> None:
    """A collector that dies mid-run ends the measurement with its log."""
    while True:
        for c in collectors:
            if c.process.poll() is not None:
                raise RuntimeError(
                    f"collector {c.name} exited with {c.process.returncode} during the run; "
                    f"its log ({c.log}):\n{c.log_tail()}"
                )
        await asyncio.sleep(0.5)


def _mb(value: int | None) -> float | None:
    return None if value is None else value / 2**20


def measure_copy(setup: Setup, readings: int, records_per_message: int | None) -> tuple[float, int]:
    """readings/s of a COPY of the fleet's rows, and how many rows: in the order the fleet
    sends them in messages of `records_per_message`, or edge by edge (None)."""
    per_edge = max(setup.tags, readings // setup.edges)
    rows = database.copy_rows(
        setup.edges, setup.tags, per_edge, BATCH, datetime.now(UTC), records_per_message
    )
    url = database.fresh_database(setup.base_url, setup.bench_db, setup.template_db)
    seconds = database.measure_copy(url, rows)
    return len(rows) / seconds, len(rows)


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")
