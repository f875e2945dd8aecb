"""The answers measured (traces, recalls, batch parameters) and their baselines (the bare
walk, a bare count of readings): what to measure, on which lots, in which order."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection

from bench.genealogy.plant import FERMENTER, FINISHED, INTERMEDIATES, SALT_GTIN
from cloud_collector import queries, trace

Kind = Literal["walk", "trace", "recall", "stream", "params", "scan"]


@dataclass(frozen=True)
class Job:
    scenario: str
    kind: Kind
    target: int | str  # a lot id, or a batch id
    direction: trace.Direction = "forward"
    points: int = 0  # batch parameters: the series' points per tag
    capture: bool = False  # keep the statements, for EXPLAIN

    @property
    def label(self) -> str:
        return f"params:{self.points}" if self.kind == "params" else self.kind


@dataclass
class Result:
    job: Job
    ms: float
    sql_ms: float = 0.0
    fetch_ms: float = 0.0
    statements: int = 0
    size: int = 0  # lots reached, recall lines, tags summarised, readings counted
    first_ms: float | None = None  # streamed: until the first rows
    timed_out: bool = False
    killed: bool = False  # past --timeout with no statement sent: stuck in Python
    by_statement: dict[str, list[float]] = field(default_factory=dict)
    captured: dict[str, tuple[str, Any]] = field(default_factory=dict)


LOTS: dict[int, trace.Lot] = {}  # resolved before the clock starts


async def answer(conn: AsyncConnection, job: Job, t0: float) -> tuple[int, float | None]:
    """Runs the job; returns the answer's size and, streamed, when the first rows came."""
    if job.kind == "scan":
        sql = "select count(*) from readings where batch_id = %s"
        row = await (await conn.execute(sql, (job.target,))).fetchone()
        return (int(row[0]) if row else 0), None
    if job.kind == "params":
        batch = await queries.get_batch(conn, str(job.target))
        assert batch is not None, f"batch {job.target} is missing"
        return len((await queries.batch_parameters(conn, batch, job.points)).tags), None
    lot_id = int(job.target)
    if job.kind == "walk":
        return await trace.count_reachable(conn, lot_id, job.direction), None
    if job.kind == "trace":
        return len((await trace.trace(conn, LOTS[lot_id], job.direction)).lots), None
    if job.kind == "recall":
        return len((await trace.recall(conn, LOTS[lot_id])).lines), None
    rows, first = 0, None
    async for block in trace.recall_csv(conn, LOTS[lot_id]):
        first = first or (time.perf_counter() - t0) * 1000
        rows += block.count(b"\n")
    return rows, first


@dataclass
class Targets:
    ordinary: list[int]
    recall_10k: list[tuple[int, int]]  # (lot id, lots it reaches)
    recall_500k: tuple[int, int]
    batch: str
    batch_readings: int
    scale: float


async def _reach(url: str, lot_ids: list[int]) -> dict[int, int]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        return {x: await trace.count_reachable(conn, x, "forward") for x in lot_ids}


def choose(url: str, samples: int, recall_runs: int, seed: int) -> Targets:
    """Random intermediate and finished lots; the salt fills nearest 10,000 lots reached and
    the salt supplier lot nearest 500,000 (both times the scale); the fermentation batch."""
    with psycopg.connect(url, autocommit=True) as conn:

        def ids(where: str, *params: Any) -> list[int]:
            return [r[0] for r in conn.execute(f"select lot_id from lots where {where}", params)]  # type: ignore[arg-type]

        scale = len(ids("true")) / 1_000_000
        ordinary = ids("gtin = any(%s) order by lot_id", INTERMEDIATES + FINISHED)
        fills = ids("gtin = %s and origin = 'own'", SALT_GTIN)
        salt = ids("gtin = %s and origin = 'supplier'", SALT_GTIN)
        big = conn.execute(
            "select batch_id, (select count(*) from readings r where r.batch_id = b.batch_id)"
            " from batches b where line_id = %s",
            (FERMENTER,),
        ).fetchone()
    assert big is not None, "no fermentation batch: was trace_bench built by this script?"
    reach = asyncio.run(_reach(url, fills + salt))
    near_10k = sorted(fills, key=lambda x: abs(reach[x] - 10_000 * scale))[:recall_runs]
    widest = min(salt, key=lambda x: abs(reach[x] - 500_000 * scale))
    return Targets(
        ordinary=random.Random(seed).sample(ordinary, min(samples, len(ordinary))),
        recall_10k=[(x, reach[x]) for x in near_10k],
        recall_500k=(widest, reach[widest]),
        batch=big[0],
        batch_readings=big[1],
        scale=scale,
    )


def plan(t: Targets, recall_runs: int, param_runs: int) -> list[Job]:
    """Each answer next to its baseline, on the same lot or batch, in the same run."""
    jobs = [  # untimed: a fresh connection's catalogue lookups
        Job("warm-up", "walk", t.ordinary[0], "backward"),
        Job("warm-up", "scan", t.batch),
    ]
    for direction in ("backward", "forward"):
        for i, lot in enumerate(t.ordinary):
            jobs.append(Job(direction, "walk", lot, direction))
            jobs.append(Job(direction, "trace", lot, direction, capture=i == 0))
    for i, (lot, _) in enumerate(t.recall_10k):
        jobs.append(Job("recall-10k", "walk", lot))
        jobs.append(Job("recall-10k", "stream", lot, capture=i == 0))
        jobs.append(Job("recall-10k", "recall", lot, capture=i == 0))
    lot = t.recall_500k[0]
    for i in range(recall_runs):
        jobs.append(Job("recall-500k", "walk", lot))
        jobs.append(Job("recall-500k", "stream", lot, capture=i == 0))
    jobs.append(Job("recall-500k", "recall", lot))
    for i in range(param_runs):
        jobs.append(Job("parameters", "scan", t.batch))
        jobs.append(Job("parameters", "params", t.batch, capture=i == 0))
        jobs.append(Job("parameters", "params", t.batch, points=1000, capture=i == 0))
    return jobs
