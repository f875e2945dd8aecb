"""A batch's parameters as `tracectl parameters` and the demo print them."""

from __future__ import annotations

from typing import Any


def print_parameters(body: dict[str, Any]) -> None:
    b = body["batch"]
    print(f"batch {b['batch_id']} on line {b['line_id']} (edge {b['edge_id']})")
    print(f"  started {b['started_at']} by {b['started_by']}")
    print(f"  ended   {b['ended_at']} by {b['ended_by']}")
    columns = ("min", "mean", "max")
    print(
        f"  {'device/tag':32} {'unit':>6} {'count':>6} {'bad':>4} "
        + " ".join(f"{c:>10}" for c in columns)
    )
    for t in body["tags"]:
        stats = [f"{t[k]:10.3f}" if t[k] is not None else f"{'-':>10}" for k in columns]
        print(
            f"  {t['device'] + '/' + t['tag']:32} {t['unit'] or '':>6} {t['count']:6d} "
            f"{t['bad_count']:4d} {' '.join(stats)}"
        )
    for gap in body["gaps"]:
        print(f"  gap: {gap}")
