"""The pieces of the pages that need no database: loops found in a genealogy of any depth,
and how many chart buckets a batch asks for (rollups only above RAW_SERIES_READINGS)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from cloud_collector import queries
from cloud_collector.pages.batch_page import CHART_POINTS, RAW_SERIES_READINGS, chart_points
from cloud_collector.pages.graph import cycles


def test_loops_are_the_cycles_and_only_them() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("x", "y")]
    groups = cycles(["a", "b", "c", "d", "e", "x", "y"], edges)
    assert sorted(map(sorted, groups)) == [["a", "b", "c"], ["d", "e"]]
    assert cycles(["a", "b"], [("a", "b")]) == []


def test_a_genealogy_deeper_than_python_s_recursion_still_draws() -> None:
    chain = [f"n{i}" for i in range(20_000)]
    edges = list(itertools.pairwise(chain))
    assert cycles(chain, edges) == []
    assert [len(g) for g in cycles(chain, [*edges, (chain[-1], chain[0])])] == [20_000]


def _tag(count: int, minutes: int) -> queries.TagSummary:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return queries.TagSummary(
        device="d", tag="t", unit=None, count=count, good_count=count, bad_count=0,
        uncertain_count=0, min=0, max=1, mean=0.5, first_time=start,
        last_time=start + timedelta(minutes=minutes),
    )  # fmt: skip


def test_a_large_batch_is_charted_from_its_minutes() -> None:
    assert chart_points([]) == 0
    assert chart_points([_tag(RAW_SERIES_READINGS, 60)]) == CHART_POINTS
    # More readings than that: at most one bucket per minute, so the rollups answer.
    assert chart_points([_tag(RAW_SERIES_READINGS + 1, 420)]) == 420
    assert chart_points([_tag(10**6, 5000)]) == CHART_POINTS
    assert chart_points([_tag(10**6, 0)]) == 1
