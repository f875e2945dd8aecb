"""The results: one Markdown table for the README, each figure as its spread over the runs
(min-max), ratios to the COPY of the same run, and the JSON file with every run's figures."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.ingest.measure import Measurement
from cloud_collector import ingest


@dataclass
class Run:
    """One repetition: every load, each flat-out one between COPYs of its own
    (Measurement.copy_rate), measured in one sitting."""

    copy_rows: int
    measurements: list[Measurement]


def spread(values: Sequence[float | None], digits: int = 0) -> str:
    """min-max of the values that exist (one value when they agree at this precision)."""
    present = [v for v in values if v is not None and v == v]
    if not present:
        return "n/a"
    low, high = f"{min(present):,.{digits}f}", f"{max(present):,.{digits}f}"
    return low if low == high else f"{low}-{high}"


def _same_load(runs: Sequence[Run]) -> list[list[tuple[Run, Measurement]]]:
    """Measurements grouped by load, in the order of the first run."""
    groups: dict[object, list[tuple[Run, Measurement]]] = {}
    for run in runs:
        for m in run.measurements:
            groups.setdefault(m.load, []).append((run, m))
    return list(groups.values())


def _per_process(
    group: list[tuple[Run, Measurement]], pick: Callable[[Measurement], dict[str, float | None]]
) -> str:
    names = sorted({n for _, m in group for n in pick(m) if n.startswith("bench-collector")})
    return " + ".join(spread([pick(m).get(n) for _, m in group]) for n in names)


HEADER = (
    "| load | readings/s committed and acked | x same-run COPY | x bulk-order COPY "
    "| latency p50 ms | p95 ms "
    "| p99 ms | collector CPU % of a core | collector peak RSS MB | broker CPU % "
    "| PostgreSQL CPU % | generator CPU % | resent messages | missing / doubled |"
)


def table(runs: Sequence[Run]) -> list[str]:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    copies = [c for r in runs for m in r.measurements for c in (m.copy_before, m.copy_after)]
    bulk = [m.bulk_copy_rate for r in runs for m in r.measurements]
    rows = f"{runs[0].copy_rows:,} rows"
    lines.append(
        f"| binary COPY, one connection ({rows} in the order the fleet sends them, before "
        f"and after each load: its baseline is their mean) | {spread(copies)} | 1.00 "
        "| | | | | | | | | | | |"
    )
    lines.append(
        f"| binary COPY, one connection ({rows} edge by edge, as a bulk load) | {spread(bulk)} "
        "| | 1.00 | | | | | | | | | | |"
    )
    for group in _same_load(runs):
        load = group[0][1].load
        ms = [m for _, m in group]
        who = f"{load.collectors} collector{'s' * (load.collectors > 1)}"
        if load.rate is None:
            what = f"{who}, {load.records} records per message"
        else:
            mean = spread([m.sent / m.messages for m in ms])
            what = (
                f"{who}, offered {load.rate:,.0f} readings/s (up to {load.records} per message,"
                f" {mean} on average)"
            )
        lines.append(
            "| "
            + " | ".join(
                [
                    what,
                    spread([m.rate for m in ms]),
                    spread([m.rate / m.copy_rate if m.copy_rate else None for m in ms], 2),
                    spread(
                        [m.rate / m.bulk_copy_rate if m.bulk_copy_rate else None for m in ms], 2
                    ),
                    spread([m.latency_ms.get("p50") for m in ms]),
                    spread([m.latency_ms.get("p95") for m in ms]),
                    spread([m.latency_ms.get("p99") for m in ms]),
                    _per_process(group, lambda m: m.cpu_percent),
                    _per_process(group, lambda m: m.peak_rss_mb),
                    spread([m.cpu_percent.get("broker") for m in ms]),
                    spread([m.cpu_percent.get("postgres") for m in ms]),
                    spread([m.cpu_percent.get("generator") for m in ms]),
                    spread([m.resent_messages for m in ms]),
                    f"{sum(m.tally.missing for m in ms)} / {sum(m.tally.doubled for m in ms)}",
                ]
            )
            + " |"
        )
    return lines


def two_against_one(runs: Sequence[Run]) -> list[str]:
    """Per records per message, run by run: the rate of the most collectors against one
    collector's, as measured and as each against its own COPYs (the machine's drift
    between the two loads taken out)."""
    lines = []
    records = sorted({m.load.records for r in runs for m in r.measurements if m.load.rate is None})
    for n in records:
        raw, against_copy = [], []
        for run in runs:
            flat = {m.load.collectors: m for m in run.measurements if m.load.rate is None
                    and m.load.records == n}  # fmt: skip
            if 1 not in flat or len(flat) < 2:
                continue
            one, most = flat[1], flat[max(flat)]
            raw.append(f"{most.rate / one.rate:.2f}")
            if most.copy_rate and one.copy_rate:
                ratio = (most.rate / most.copy_rate) / (one.rate / one.copy_rate)
                against_copy.append(f"{ratio:.2f}")
        if raw:
            lines.append(
                f"{max(m.load.collectors for r in runs for m in r.measurements)} collectors "
                f"against 1 at {n} records a message, run by run: {' / '.join(raw)} x as "
                f"measured, {' / '.join(against_copy) or 'n/a'} x against each load's COPY."
            )
    return lines


def problems(runs: Sequence[Run]) -> list[str]:
    return [
        f"run {i}, {m.load.label}: {p}"
        for i, run in enumerate(runs, start=1)
        for m in run.measurements
        for p in m.problems
    ]


def busy_generator(runs: Sequence[Run], limit: float = 80.0) -> list[str]:
    """Loads where the generator used most of its core: it may have been the limit."""
    return sorted(
        {
            m.load.label
            for run in runs
            for m in run.measurements
            if (m.cpu_percent.get("generator") or 0.0) > limit
        }
    )


def code_measured() -> str:
    """Which cloud_collector was measured: its folder, and its commit if it has one."""
    folder = Path(ingest.__file__).resolve().parent.parent
    git = ["git", "-C", str(folder)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return str(folder)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "cloud_collector"], capture_output=True, text=True
    ).stdout.strip()
    return f"{head.stdout.strip()}" + (" with uncommitted changes" if changed else "")


def write_json(path: Path, args: dict[str, object], runs: Sequence[Run], lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "benchmark": "bench.ingest",
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": code_measured(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": args,
        "runs": [
            {
                "copy_rows": r.copy_rows,
                "measurements": [m.as_json() for m in r.measurements],
            }
            for r in runs
        ],
        "problems": problems(runs),
        "markdown": "\n".join(lines),
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
