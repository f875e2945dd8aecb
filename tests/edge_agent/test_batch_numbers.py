"""Batch ids made by a line's numbering rule when a batch starts without one: the cases as
data (rule, clock, what the store held -> ids), the sequence kept with the start (a start
that fails gives its number back, a restart goes on where it was), the start through the
control API with no id, and a PLC run tag (a run bit or a counter) that starts batches."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from device_profiles.numbering import BatchNumbering
from edge_agent.batch_context import BatchConflict, BatchContext
from edge_agent.batch_numbers import BatchNumbers, NoNumberingRule
from edge_agent.binding import BatchTag, Binder
from edge_agent.control import ControlAccess, create_control_app
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.store import EdgeStore
from protocols.driver import Sample

CASES = yaml.safe_load((Path(__file__).parent / "batch_numbers" / "cases.yaml").read_text())
DAILY = BatchNumbering.model_validate({"pattern": "{line}-{date:%y%m%d}-{seq}"})
AT = datetime.fromisoformat("2026-12-02T08:00:00Z")


def edge(path: Path, rules: dict[str, BatchNumbering]) -> Binder:
    outbox = Outbox(EdgeStore(path))
    return Binder(
        BatchContext(outbox.store, ["line-1", "line-2"]),
        outbox,
        numbers=BatchNumbers(outbox.store, rules),
    )


def started(binder: Binder) -> list[dict[str, Any]]:
    events = [json.loads(body) for _, body in binder.outbox.take(EVENTS, 1000)]
    return [e for e in events if e["kind"] == "batch_started"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_rule_clock_and_store_make_the_ids(case: dict[str, Any], tmp_path: Path) -> None:
    binder = edge(tmp_path / "s.db", {"line-1": BatchNumbering.model_validate(case["rule"])})
    prior = case.get("prior", {})
    for batch_id in prior.get("started", []):  # e.g. from labels, earlier
        binder.start_batch("line-1", batch_id, "op", AT)
        binder.end_batch("line-1", "op", AT)
    if "sequence" in prior:
        with binder.store.transaction() as db:
            db.execute(
                "insert into batch_sequence values ('line-1', ?, ?)",
                (prior["sequence"]["period"], prior["sequence"]["next_seq"]),
            )
    made = []
    for at in case["starts"]:
        made.append(binder.start_batch("line-1", None, "op", datetime.fromisoformat(at)).batch_id)
        binder.end_batch("line-1", "op")
    assert made == case["ids"]
    events = started(binder)[len(prior.get("started", [])) :]
    assert [(e["batch"], e["numbered_by_rule"]) for e in events] == [(i, True) for i in made]


def test_a_given_id_is_not_marked_as_made_by_rule(tmp_path: Path) -> None:
    binder = edge(tmp_path / "s.db", {"line-1": DAILY})
    binder.start_batch("line-1", "WO-1", "mes", AT)
    # Not even written as false: a collector older than the field takes the event.
    assert [(e["batch"], "numbered_by_rule" in e) for e in started(binder)] == [("WO-1", False)]


def test_the_sequence_survives_a_restart_and_a_refused_start_gives_its_number_back(
    tmp_path: Path,
) -> None:
    binder = edge(tmp_path / "s.db", {"line-1": DAILY, "line-2": DAILY})
    assert binder.start_batch("line-1", None, "op", AT).batch_id == "line-1-261202-001"
    with pytest.raises(BatchConflict, match="already runs batch line-1-261202-001"):
        binder.start_batch("line-1", None, "op", AT)
    binder.end_batch("line-1", "op")
    binder.store.close()

    again = edge(tmp_path / "s.db", {"line-1": DAILY, "line-2": DAILY})
    assert again.start_batch("line-1", None, "op", AT).batch_id == "line-1-261202-002"
    assert again.start_batch("line-2", None, "op", AT).batch_id == "line-2-261202-001"


def test_a_crash_inside_the_start_takes_no_number(tmp_path: Path) -> None:
    binder = edge(tmp_path / "s.db", {"line-1": DAILY})

    def start_and_fail() -> None:
        with binder.store.transaction():
            binder.start_batch("line-1", None, "op", AT)
            raise RuntimeError("power cut before the commit")

    with pytest.raises(RuntimeError):
        start_and_fail()
    assert binder.context.active("line-1") is None
    assert binder.start_batch("line-1", None, "op", AT).batch_id == "line-1-261202-001"


def test_a_line_without_a_rule_needs_the_id(tmp_path: Path) -> None:
    binder = edge(tmp_path / "s.db", {"line-1": DAILY})
    with pytest.raises(NoNumberingRule, match="line line-2 has no numbering rule: give the"):
        binder.start_batch("line-2", None, "op", AT)
    assert binder.context.active("line-2") is None and started(binder) == []


TOKEN = "a-test-token-of-enough-length"


async def test_the_control_api_starts_a_batch_with_no_id_by_the_rule(tmp_path: Path) -> None:
    binder = edge(tmp_path / "s.db", {"line-1": DAILY})
    app = create_control_app(binder, lambda: {}, access=ControlAccess.of(TOKEN, "127.0.0.1", 8100))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)),
        base_url="http://127.0.0.1:8100",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as c:
        made = await c.put("/api/v1/lines/line-1/batch", json={"by": "hmi-3"})
        assert made.status_code == 201, made.text
        batch_id = made.json()["batch_id"]
        assert batch_id.startswith("line-1-") and batch_id.endswith("-001")
        assert made.json()["started_by"] == "hmi-3"
        assert (await c.delete("/api/v1/lines/line-1/batch")).status_code == 200
        second = await c.put("/api/v1/lines/line-1/batch", json={})
        assert second.json()["batch_id"].endswith("-002")

        no_rule = await c.put("/api/v1/lines/line-2/batch", json={"by": "hmi-3"})
        assert no_rule.status_code == 422
        assert "line line-2 has no numbering rule" in no_rule.json()["detail"]
    assert [e["numbered_by_rule"] for e in started(binder)] == [True, True]


def run_tag_edge(path: Path) -> Binder:
    binder = edge(path, {"line-1": DAILY})
    binder.batch_tags = {"plc": BatchTag("running", numbered=True)}
    return binder


def follow(binder: Binder, values: list[float]) -> None:
    for i, value in enumerate(values):
        at = AT + timedelta(minutes=i)
        binder.readings("line-1", "plc", [Sample("running", value, None)], at)


@pytest.mark.parametrize(
    ("values", "kinds"),
    [
        # A run bit: 1 runs a batch, 0 is idle; each rise is a new batch.
        ([0, 1, 1, 0, 0, 1], ["started 001", "ended 001", "started 002"]),
        # A PLC counter that is not unique (it starts again at 1 after a PLC reset).
        (
            [5, 5, 6, 1, 0],
            ["started 001", "ended 001", "started 002", "ended 002", "started 003", "ended 003"],
        ),
        ([float("nan"), 0], []),
    ],
    ids=["run-bit", "counter", "idle"],
)
def test_a_plc_run_tag_starts_batches_numbered_by_rule(
    tmp_path: Path, values: list[float], kinds: list[str]
) -> None:
    binder = run_tag_edge(tmp_path / "s.db")
    follow(binder, values)
    events = [json.loads(body) for _, body in binder.outbox.take(EVENTS, 100)]
    assert [f"{e['kind'].removeprefix('batch_')} {e['batch'][-3:]}" for e in events] == kinds
    assert all(e["by"] == "plc:plc/running" for e in events)
    assert all(e["numbered_by_rule"] for e in events if e["kind"] == "batch_started")


def test_after_a_restart_the_run_tag_s_value_continues_the_running_batch(tmp_path: Path) -> None:
    binder = run_tag_edge(tmp_path / "s.db")
    follow(binder, [1])
    binder.store.close()
    again = run_tag_edge(tmp_path / "s.db")
    follow(again, [1, 1])  # the same running batch, read anew
    active = again.context.active("line-1")
    assert active is not None and active.batch_id == "line-1-261202-001"
    follow(again, [0, 1])
    active = again.context.active("line-1")
    assert active is not None and active.batch_id == "line-1-261202-002"
