"""The edge's store: one durable file for the outbox, the batch context and the stations,
and the one transaction they share (docs/outbox.md, "The edge's store")."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.outbox import EVENTS, READINGS, Outbox
from edge_agent.records import UNNUMBERED
from edge_agent.stations import Stations
from edge_agent.store import EdgeStore
from protocols.mqtt.contract import Item, Reading

AT = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
FLOUR = Item(
    epc_class="https://id.gs1.org/01/09506000134352/10/F7", gtin="09506000134352", lot="F7"
)


def edge(path: Path, commit_interval_s: float = 0.0) -> tuple[EdgeStore, Outbox, Stations]:
    store = EdgeStore(path, commit_interval_s=commit_interval_s)
    outbox = Outbox(store)
    binder = Binder(BatchContext(store, ["line-1"]), outbox)
    return store, outbox, Stations(binder, ["line-1"], ["dock-3"])


def reading(value: float) -> Reading:
    return Reading(
        seq=UNNUMBERED, time=AT, line="line-1", batch=None, device="d", tag="t", value=value
    )


def test_one_durable_file_holds_the_tables_of_every_part(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "edge" / "state.db")
    tables = {
        row[0] for row in store.db.execute("select name from sqlite_master where type = 'table'")
    }
    assert {"meta", "streams", "records", "quarantine"} <= tables  # the outbox's
    assert "active_batch" in tables  # the batch context's
    assert {"dock_binding", "batch_items", "line_operator"} <= tables  # the stations'
    assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("pragma synchronous").fetchone()[0] == 2  # FULL


def test_a_batch_end_and_its_events_commit_together_or_not_at_all(tmp_path: Path) -> None:
    store, outbox, stations = edge(tmp_path / "s.db")
    stations.scan_batch("line-1", "batch_start", "WO-1", "scanner", AT)
    stations.line_item("line-1", "input", FLOUR, AT, "scanner")
    depth = outbox.depth(EVENTS)

    def end_and_fail() -> None:
        with store.transaction():
            stations.scan_batch("line-1", "batch_end", "WO-1", "scanner", AT)
            assert stations.binder.context.active("line-1") is None  # ended, events appended
            assert outbox.depth(EVENTS) == depth + 2
            raise RuntimeError("power cut before the commit")

    with pytest.raises(RuntimeError, match="power cut"):
        end_and_fail()
    # Neither the batch's end nor its events happened, in memory as on disk.
    active = stations.binder.context.active("line-1")
    assert active is not None and active.batch_id == "WO-1"
    assert outbox.depth(EVENTS) == depth
    store.close()

    store, outbox, stations = edge(tmp_path / "s.db")
    active = stations.binder.context.active("line-1")
    assert active is not None and active.batch_id == "WO-1"
    stations.scan_batch("line-1", "batch_end", "WO-1", "scanner", AT)
    runs = iter(lambda: outbox.take(EVENTS, 10), [])
    events = sorted((json.loads(body) for run in runs for _, body in run), key=lambda e: e["seq"])
    assert [(e["kind"], e["seq"]) for e in events] == [
        ("batch_started", 0),
        ("batch_ended", 1),  # no number was spent on what was rolled back
        ("transformation_event", 2),
    ]
    assert [i["lot"] for i in events[2]["inputs"]] == ["F7"]  # the input survived the rollback


def test_the_batch_context_and_the_outbox_must_share_one_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one EdgeStore"):
        Binder(
            BatchContext(EdgeStore(tmp_path / "a.db"), ["line-1"]),
            Outbox(EdgeStore(tmp_path / "b.db")),
        )


def test_grouped_appends_commit_on_their_own_before_a_transaction_that_fails(
    tmp_path: Path,
) -> None:
    store, outbox, stations = edge(tmp_path / "s.db", commit_interval_s=3600)
    woken: list[bool] = []
    outbox.on_append = lambda: woken.append(True)
    outbox.append(READINGS, reading(1.0))
    other = sqlite3.connect(tmp_path / "s.db")
    assert other.execute("select count(*) from records").fetchone()[0] == 0  # grouped, open

    def operator_and_fail() -> None:
        with store.transaction():
            stations.set_operator("line-1", "OP-7")
            raise RuntimeError("refused later in the transaction")

    with pytest.raises(RuntimeError, match="refused later"):
        operator_and_fail()
    assert other.execute("select count(*) from records").fetchone()[0] == 1  # kept
    assert stations.operator("line-1") is None and woken == [True]
    outbox.append(READINGS, reading(2.0))
    store.flush()
    assert other.execute("select count(*) from records").fetchone()[0] == 2
    assert woken == [True, True]
