"""The answers run in a worker process over one autocommit connection, as the API's pool
gives one; each statement timed, and a run past --timeout stopped or, stuck in Python, killed."""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import queue
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Self

import psycopg
from psycopg import AsyncConnection, AsyncCursor, AsyncServerCursor
from psycopg.rows import Row

from bench.genealogy.answers import LOTS, Job, Result, answer
from cloud_collector import queries, trace


class OverBudget(Exception):
    """An answer ran past --timeout (checked before each statement it sends)."""


@dataclass
class Probe:
    """What one answer cost: time in statements (execute), in turning rows into Python
    objects (fetch), and per statement."""

    deadline: float = math.inf
    capture: bool = False
    sql_s: float = 0.0
    fetch_s: float = 0.0
    statements: int = 0
    by_statement: dict[str, list[float]] = field(default_factory=dict)  # [calls, seconds]
    captured: dict[str, tuple[str, Any]] = field(default_factory=dict)  # first (query, params)

    def record(self, query: Any, params: Any, seconds: float, call: bool = True) -> None:
        key = " ".join(str(query).split())
        self.sql_s += seconds
        self.statements += call
        entry = self.by_statement.setdefault(key, [0, 0.0])
        entry[0] += call
        entry[1] += seconds
        if self.capture and key not in self.captured:
            self.captured[key] = (str(query), params)


PROBE = Probe()  # the worker process's answer in progress


class TimedCursor(AsyncCursor[Row]):
    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        if time.perf_counter() > PROBE.deadline:
            raise OverBudget
        t0 = time.perf_counter()
        try:
            return await super().execute(query, params, **kwargs)
        finally:
            PROBE.record(query, params, time.perf_counter() - t0)

    async def fetchone(self) -> Row | None:
        t0 = time.perf_counter()
        try:
            return await super().fetchone()
        finally:
            PROBE.fetch_s += time.perf_counter() - t0

    async def fetchall(self) -> list[Row]:
        t0 = time.perf_counter()
        try:
            return await super().fetchall()
        finally:
            PROBE.fetch_s += time.perf_counter() - t0


class TimedServerCursor(AsyncServerCursor[Row]):
    """A named cursor does its work as rows are fetched: that time counts as its SQL."""

    query: Any = None

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Self:
        self.query = query
        t0 = time.perf_counter()
        try:
            return await super().execute(query, params, **kwargs)
        finally:
            PROBE.record(query, params, time.perf_counter() - t0)

    async def fetchmany(self, size: int = 0) -> list[Row]:
        if time.perf_counter() > PROBE.deadline:
            raise OverBudget
        t0 = time.perf_counter()
        try:
            return await super().fetchmany(size)
        finally:
            PROBE.record(self.query, None, time.perf_counter() - t0, call=False)


async def _run(conn: AsyncConnection, job: Job, timeout_s: float) -> Result:
    global PROBE
    if job.kind in ("trace", "recall", "stream") and int(job.target) not in LOTS:
        LOTS[int(job.target)] = await trace.resolve(conn, str(job.target))
    t0 = time.perf_counter()
    PROBE = Probe(deadline=t0 + timeout_s, capture=job.capture)
    size, first, timed_out = 0, None, False
    try:
        size, first = await answer(conn, job, t0)
    except (OverBudget, psycopg.errors.QueryCanceled):
        timed_out = True
    return Result(
        job,
        ms=(time.perf_counter() - t0) * 1000,
        sql_ms=PROBE.sql_s * 1000,
        fetch_ms=PROBE.fetch_s * 1000,
        statements=PROBE.statements,
        size=size,
        first_ms=first,
        timed_out=timed_out,
        by_statement=PROBE.by_statement,
        captured=PROBE.captured,
    )


async def _work(url: str, jobs: list[Job], out: Any, timeout_s: float, budget_s: float) -> None:
    conn = await AsyncConnection.connect(
        url, autocommit=True, cursor_factory=TimedCursor, options=queries.SESSION_OPTIONS
    )
    conn.server_cursor_factory = TimedServerCursor
    await conn.execute(f"set statement_timeout = {int(timeout_s * 1000)}")
    out.put(("ready", conn.info.backend_pid))
    spent: dict[str, float] = defaultdict(float)
    stopped: set[tuple[str, str]] = set()
    for job in jobs:
        if (job.scenario, job.label) in stopped or spent[job.scenario] > budget_s:
            out.put(("skipped", job))
            continue
        out.put(("start", job))
        result = await _run(conn, job, timeout_s)
        spent[job.scenario] += result.ms / 1000
        if result.timed_out:
            stopped.add((job.scenario, job.label))
        out.put(("done", result))
    await conn.close()
    out.put(("end", None))


def _worker(url: str, jobs: list[Job], out: Any, timeout_s: float, budget_s: float) -> None:
    asyncio.run(_work(url, jobs, out, timeout_s, budget_s))


def measure(url: str, jobs: list[Job], timeout_s: float, budget_s: float) -> list[Result]:
    """Runs the jobs in a worker process, as the API would on one pooled connection. A job
    that outlives --timeout in Python (where no statement is sent, so nothing checks the
    clock) is killed with its session; the worker restarts without that kind of job."""
    ctx = multiprocessing.get_context("spawn")
    results: list[Result] = []
    todo = list(jobs)
    while todo:
        out = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(url, todo, out, timeout_s, budget_s))
        proc.start()
        backend, running, done, since = 0, None, 0, time.monotonic()
        while True:
            try:
                message, payload = out.get(timeout=1.0)
            except queue.Empty:
                if proc.is_alive() and time.monotonic() - since < timeout_s + 30:
                    continue
                proc.kill()
                proc.join()
                if backend:
                    with psycopg.connect(url, autocommit=True) as admin:
                        admin.execute("select pg_terminate_backend(%s)", (backend,))
                if running is None:
                    raise RuntimeError("the benchmark worker died: see its traceback") from None
                results.append(Result(running, timeout_s * 1000, timed_out=True, killed=True))
                _progress(results[-1])
                key = (running.scenario, running.label)
                todo = [j for j in todo[done + 1 :] if (j.scenario, j.label) != key]
                break
            since = time.monotonic()
            if message == "ready":
                backend = payload
            elif message == "start":
                running = payload
            elif message in ("done", "skipped"):
                done, running = done + 1, None
                if message == "done":
                    results.append(payload)
                    _progress(payload)
            else:
                proc.join()
                todo = []
                break
    return results


def _progress(r: Result) -> None:
    took = f"> {r.ms / 1000:.0f} s: stopped" if r.timed_out else f"{r.ms:10.1f} ms"
    j = r.job
    print(
        f"  {j.scenario:11} {j.label:11} {j.target!s:>18} {took}  size {r.size:,}",
        file=sys.stderr,
        flush=True,
    )
