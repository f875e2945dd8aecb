"""The output: the markdown table for the README, where the time goes, EXPLAIN ANALYZE of
the costliest statements, and the server and code measured."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psycopg

from bench.genealogy.answers import Result, Targets
from cloud_collector import queries

MAX_WALK_RATIO = 2.0

# What the README's table shows: (row, scenario, answer, baseline, target, limit in ms, and
# whether the limit holds for the p95 (else the p50) and the answer must stay within 2x the
# bare walk).
ROWS = (  # {fill}, {salt}, {readings}: what the data set at hand gives
    ("backward trace, ordinary lot", "backward", "trace", "walk", "p95 < 20 ms", 20, 1, 1),
    ("forward trace, ordinary lot", "forward", "trace", "walk", "p95 < 20 ms", 20, 1, 1),
    ("recall, raw lot reaching {fill} lots", "recall-10k", "recall", "walk", "< 150 ms", 150, 0, 1),
    ("same, streamed", "recall-10k", "stream", "walk", "< 150 ms", 150, 0, 1),
    ("recall, ingredient reaching {salt} lots", "recall-500k", "recall", "walk", "-", 0, 0, 0),
    ("same, streamed", "recall-500k", "stream", "walk", "< 3 s", 3000, 0, 1),
    (
        "batch parameters, {readings} readings",
        "parameters",
        "params:0",
        "scan",
        "< 200 ms",
        200,
        0,
        0,
    ),
    ("same, with 1000-point series", "parameters", "params:1000", "scan", "< 200 ms", 200, 0, 0),
)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def report(results: list[Result], t: Targets, timeout_s: float) -> list[str]:
    by: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        by[(r.job.scenario, r.job.label)].append(r)
    rows: list[list[str]] = []
    sizes = {
        "fill": f"{statistics.median(n for _, n in t.recall_10k):,.0f}",
        "salt": f"{t.recall_500k[1]:,}",
        "readings": f"{t.batch_readings:,}",
    }
    for what, scenario, label, baseline, target, limit, on_p95, vs_walk in ROWS:
        what = what.format(**sizes)
        runs = by.get((scenario, label), [])
        if not runs:
            continue
        ok = [r.ms for r in runs if not r.timed_out]
        base = [r.ms for r in by.get((scenario, baseline), []) if not r.timed_out]
        b50, b95 = (statistics.median(base), _pct(base, 0.95)) if base else (math.nan, math.nan)
        target += ", <= 2x walk" if vs_walk and limit else ""
        count = f"{len(ok)}" if len(ok) == len(runs) else f"{len(ok)} of {len(runs)}"
        if not ok:
            over = f"> {timeout_s * 1000:,.0f}"
            ratio = f"> {timeout_s * 1000 / b50:,.0f}x" if base else "-"
            verdict = f"{'no' if limit else '-'} (stopped at {timeout_s:.0f} s)"
            rows.append([what, count, "-", over, "-", "-", f"{_ms(b50)} / {_ms(b95)}", ratio,
                         target, verdict])  # fmt: skip
            continue
        p50, p95 = statistics.median(ok), _pct(ok, 0.95)
        met = (p95 if on_p95 else p50) < limit and (not vs_walk or p95 / b95 <= MAX_WALK_RATIO)
        verdict = "yes" if met else "no" if limit else "-"
        firsts = [r.first_ms for r in runs if r.first_ms is not None]
        if firsts:
            what += f" (first rows {_ms(statistics.median(firsts))} ms)"
        size = statistics.median(r.size for r in runs if not r.timed_out)
        rows.append([what, count, f"{size:,.0f}", _ms(p50), _ms(p95), _ms(max(ok)),
                     f"{_ms(b50)} / {_ms(b95)}", f"{p50 / b50:,.1f}x / {p95 / b95:,.1f}x",
                     target, verdict])  # fmt: skip
    head = ["query", "runs", "lots / lines", "p50 ms", "p95 ms", "max ms",
            "baseline p50 / p95 ms", "answer / baseline", "target", "met"]  # fmt: skip
    out = _table(head, rows)
    out += ["", "Where the time goes (medians per answer; Python = total - SQL - row loading):", ""]
    rows = []
    for (scenario, label), runs in by.items():
        if label in ("walk", "scan") or scenario == "warm-up":
            continue
        per: dict[str, float] = defaultdict(float)
        for r in runs:
            for key, (_, seconds) in r.by_statement.items():
                per[key] += seconds
        total = sum(per.values()) or 1.0
        top = sorted(per.items(), key=lambda kv: -kv[1])[:3]
        med = statistics.median
        if all(r.killed for r in runs):
            note = f"killed after {timeout_s:.0f} s without sending a statement: stuck in Python"
            rows.append([f"{scenario} {label}", str(len(runs)), f"> {timeout_s * 1000:,.0f}",
                         "?", "?", "?", "?", note])  # fmt: skip
            continue
        stopped = " (stopped: so far)" if all(r.timed_out for r in runs) else ""
        rows.append([
            f"{scenario} {label}{stopped}",
            str(len(runs)),
            _ms(med(r.ms for r in runs)),
            _ms(med(r.sql_ms for r in runs)),
            _ms(med(r.fetch_ms for r in runs)),
            _ms(med(r.ms - r.sql_ms - r.fetch_ms for r in runs)),
            f"{med(r.statements for r in runs):,.0f}",
            "; ".join(f"{s / total:.0%} `{k[:56]}`" for k, s in top),
        ])  # fmt: skip
    head = ["answer", "runs", "total ms", "SQL ms", "row loading ms", "Python ms", "statements",
            "top statements by SQL time"]  # fmt: skip
    return out + _table(head, rows)


def explain(url: str, results: list[Result], timeout_s: float, limit: int = 14) -> list[str]:
    """EXPLAIN ANALYZE of the statements captured answers sent, costliest first."""
    seen: dict[str, tuple[str, Any, str, int, float]] = {}
    for r in results:
        for key, (query, params) in r.captured.items():
            calls, seconds = r.by_statement.get(key, [0, 0.0])
            if key not in seen or seen[key][4] < seconds:
                label = f"{r.job.scenario} {r.job.label}"
                seen[key] = (query, params, label, int(calls), seconds)
    ranked = sorted(seen.items(), key=lambda kv: -kv[1][4])[:limit]
    rows: list[list[str]] = []
    plans: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"set statement_timeout = {int(timeout_s * 1000)}")
        for key, (query, params, label, calls, seconds) in ranked:
            cells = [label, f"`{key[:80]}`", str(calls), f"{seconds * 1000:,.1f}"]
            try:
                sql = f"explain (analyze, buffers, format json) {query}"
                row = conn.execute(sql, params).fetchone()  # type: ignore[call-overload]
            except psycopg.Error as err:
                rows.append([*cells, type(err).__name__, "", "", ""])
                continue
            doc = row[0][0] if row else {}
            top = doc.get("Plan", {})
            rows.append([*cells, f"{doc.get('Planning Time', 0):.1f}",
                         f"{doc.get('Execution Time', 0):.1f}", str(_chunks(top)),
                         f"{top.get('Actual Rows', 0):,}"])  # fmt: skip
            if len(plans) < 4:
                sql = f"explain (analyze, costs off) {query}"
                text = _fold([r[0] for r in conn.execute(sql, params)])  # type: ignore[call-overload]
                plans.append(f"-- {label}: {key[:120]}\n" + "\n".join(text))
    head = ["answer", "statement", "calls", "their SQL ms", "planning ms", "execution ms",
            "chunks in plan", "rows"]  # fmt: skip
    out = ["", "EXPLAIN ANALYZE of each statement, as captured from one answer (costliest first):"]
    return [*out, "", *_table(head, rows), "", "```", "\n\n".join(plans), "```"]


def _fold(plan: list[str]) -> list[str]:
    """A plan with each run of chunk scans (and what is under them) folded into one line."""
    out: list[str] = []
    run: list[str] = []  # the node names of the chunk scans being folded
    depth = -1  # indentation of the chunk scans being folded
    for line in plan:
        indent = len(line) - len(line.lstrip(" "))
        if run and indent > depth:
            continue  # a detail of a folded chunk scan
        if " on _hyper_" in line and (not run or indent == depth):
            run.append(line.strip().removeprefix("->").strip().split(" on ")[0].split(" using ")[0])
            depth = indent
            continue
        if run:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(run).items()))
            out.append(" " * depth + f"->  [{len(run)} chunks: {kinds}]")
            run = []
        out.append(line)
    if run:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(run).items()))
        out.append(" " * depth + f"->  [{len(run)} chunks: {kinds}]")
    return out


def _chunks(node: dict[str, Any]) -> int:
    """How many hypertable chunks a plan scans."""
    own = 1 if str(node.get("Relation Name", "")).startswith("_hyper_") else 0
    return own + sum(_chunks(child) for child in node.get("Plans", []))


def server_settings(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select name || '=' || current_setting(name) from pg_settings where name in"
            " ('shared_buffers', 'work_mem', 'jit', 'random_page_cost') order by name"
        ).fetchall()
        chunks = conn.execute("select count(*) from show_chunks('readings')").fetchone()
    n = chunks[0] if chunks else 0
    return f"{', '.join(r[0] for r in rows)}; readings in {n} chunks; {os.cpu_count()} cores"


def code_measured() -> str:
    """Which cloud_collector this run measured: its folder, and its commit if it has one."""
    folder = Path(queries.__file__).resolve().parent.parent
    git = ["git", "-C", str(folder)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return str(folder)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "cloud_collector"], capture_output=True, text=True
    ).stdout.strip()
    return f"{folder} at {head.stdout.strip()}" + (" with uncommitted changes" if changed else "")
