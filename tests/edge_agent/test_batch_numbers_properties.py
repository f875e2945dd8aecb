"""Property: the ids a valid numbering rule makes never repeat, over generated rules and
start sequences (clocks that jump ahead, go back, cross midnight and DST; restarts).

Where the clock only moves forward, the rule alone must keep them apart (the id is the one
its period and sequence give, no id skipped); where it goes back, the edge skips the ids it
started already."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from device_profiles.numbering import COVERS, BatchNumbering, Reset
from edge_agent.batch_context import BatchContext
from edge_agent.batch_numbers import BatchNumbers
from edge_agent.binding import Binder
from edge_agent.outbox import Outbox
from edge_agent.store import EdgeStore
from tests.hypothesis_profiles import load_from_env

load_from_env()

ZONES = ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata", "Pacific/Chatham"]
# The strftime directive of each date part a reset may need.
DIRECTIVE = {
    "year": "%Y",
    "month": "%m",
    "day": "%d",
    "day of year": "%j",
    "ISO year": "%G",
    "ISO week": "%V",
    "ISO weekday": "%u",
}
SHIFT_NAMES = ["A", "B", "N", "Day", "Late", "X2"]  # none begins another


@st.composite
def rules(draw: st.DrawFn) -> BatchNumbering:
    reset: Reset = draw(st.sampled_from(list(COVERS)))
    parts = draw(st.sampled_from(COVERS[reset]))
    extra = draw(st.sets(st.sampled_from(["%y", "%m", "%d"]), max_size=2))
    spec = "".join(draw(st.permutations([DIRECTIVE[p] for p in sorted(parts)] + sorted(extra))))
    shifts = []
    fields = [draw(st.sampled_from(["{line}", "{equipment}"])), "{seq}"]
    if spec:
        fields.append(f"{{date:{spec}}}")
    if reset == "shift" or draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(SHIFT_NAMES), min_size=1, max_size=4, unique=True))
        starts = draw(
            st.lists(
                st.tuples(st.integers(0, 23), st.sampled_from([0, 30])),
                min_size=len(names),
                max_size=len(names),
                unique=True,
            )
        )
        shifts = [
            {"name": n, "start": f"{h:02d}:{m:02d}"}
            for n, (h, m) in zip(names, starts, strict=True)
        ]
        fields.append("{shift}")
    order = draw(st.permutations(fields))
    separators = draw(
        st.lists(st.sampled_from(["", "-", "/"]), min_size=len(order), max_size=len(order))
    )
    return BatchNumbering.model_validate(
        {
            "pattern": "".join(s + f for s, f in zip(separators, order, strict=True)),
            "time_zone": draw(st.sampled_from(ZONES)),
            "shifts": shifts,
            "equipment": "K1",
            "sequence": {
                "width": draw(st.integers(1, 3)),
                "start": draw(st.integers(0, 9)),
                "reset": reset,
            },
        }
    )


# A start: minutes since the one before (negative: the clock was set back), and whether the
# edge restarted before it. The clock first only moves forward, then also back.
forward = st.one_of(st.integers(1, 600), st.integers(12 * 60, 3 * 24 * 60))
starts = st.tuples(
    st.lists(st.tuples(forward, st.booleans()), min_size=1, max_size=25),
    st.lists(
        st.tuples(st.one_of(forward, st.integers(-2 * 24 * 60, -1)), st.booleans()), max_size=15
    ),
)
FIRST = datetime(2026, 3, 28, 12, tzinfo=UTC)  # DST starts in Europe the next night


def binder_over(store: EdgeStore, rule: BatchNumbering) -> Binder:
    return Binder(
        BatchContext(store, ["line-1"]),
        Outbox(store),
        numbers=BatchNumbers(store, {"line-1": rule}),
    )


@given(rules(), starts)
def test_ids_of_a_valid_rule_never_repeat(
    rule: BatchNumbering, steps: list[tuple[int, bool]]
) -> None:
    store = EdgeStore(Path(":memory:"))  # the property is about ids, not about the disk
    binder = binder_over(store, rule)
    at, made = FIRST, []
    period, seq = None, rule.sequence.start
    went_back = False
    for minutes, restart in steps[0] + steps[1]:
        at += timedelta(minutes=minutes)
        went_back |= minutes < 0
        if restart:
            binder = binder_over(store, rule)
        made.append(binder.start_batch("line-1", None, "op", at).batch_id)
        binder.end_batch("line-1", "op", at)
        if not went_back:  # the rule alone: the id its period and sequence give
            seq = seq if rule.period(at) == period else rule.sequence.start
            period = rule.period(at)
            assert made[-1] == rule.render("line-1", at, seq), rule.pattern
            seq += 1
    assert len(set(made)) == len(made), (rule.pattern, made)
    store.close()
