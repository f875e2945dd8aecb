"""The active batch of each line: survives a restart, and refuses what does not fit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from edge_agent.batch_context import BatchConflict, BatchContext
from edge_agent.binding import Binder
from edge_agent.control import ControlAccess, create_control_app
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.store import EdgeStore

AT = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_the_active_batch_survives_a_restart(tmp_path: Path) -> None:
    outbox = Outbox(EdgeStore(tmp_path / "state.db"))
    BatchContext(outbox.store, ["line-1", "line-2"]).start("line-1", "B-1", "op-3", AT)
    outbox.store.close()
    again = BatchContext(EdgeStore(tmp_path / "state.db"), ["line-1", "line-2"])
    active = again.active("line-1")
    assert active is not None and (active.batch_id, active.started_by) == ("B-1", "op-3")
    assert again.active("line-2") is None


def test_a_second_start_and_an_idle_end_are_refused(tmp_path: Path) -> None:
    ctx = BatchContext(EdgeStore(tmp_path / "s.db"), ["line-1"])
    ctx.start("line-1", "B-1", "op", AT)
    with pytest.raises(BatchConflict, match="line line-1 already runs batch B-1"):
        ctx.start("line-1", "B-2", "op", AT)
    ctx.end("line-1", "op")
    with pytest.raises(BatchConflict, match="runs no batch"):
        ctx.end("line-1", "op")
    with pytest.raises(KeyError, match="line 'line-9' is not on this edge"):
        ctx.start("line-9", "B", "op", AT)


def test_start_and_end_are_events_with_who_did_it(tmp_path: Path) -> None:
    outbox = Outbox(EdgeStore(tmp_path / "s.db"))
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox)
    binder.start_batch("line-1", "B-7", "op-1")
    binder.end_batch("line-1", "plc:batch_done")
    events = [json.loads(body) for _, body in outbox.take(EVENTS, 10)]
    assert [(e["kind"], e["batch"], e["by"], e["seq"]) for e in events] == [
        ("batch_started", "B-7", "op-1", 0),
        ("batch_ended", "B-7", "plc:batch_done", 1),
    ]


TOKEN = "a-test-token-of-enough-length"
ACCESS = ControlAccess.of(TOKEN, "127.0.0.1", 8100)


def control_client(app: FastAPI) -> httpx.AsyncClient:
    """A client on this PC that sends the token, as tracectl does."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://127.0.0.1:8100",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


async def test_control_api_answers_conflicts_and_unknown_lines(tmp_path: Path) -> None:
    outbox = Outbox(EdgeStore(tmp_path / "s.db"))
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox)
    app = create_control_app(binder, lambda: {"ok": True}, access=ACCESS)
    async with control_client(app) as c:
        assert (
            await c.put("/api/v1/lines/line-1/batch", json={"batch_id": "B"})
        ).status_code == 201
        again = await c.put("/api/v1/lines/line-1/batch", json={"batch_id": "C"})
        assert again.status_code == 409 and "already runs batch B" in again.json()["detail"]
        unknown = await c.get("/api/v1/lines/nope/batch")
        assert unknown.status_code == 404 and "its lines: line-1" in unknown.json()["detail"]
        extra = await c.put("/api/v1/lines/line-1/batch", json={"batch_id": "C", "colour": 1})
        assert extra.status_code == 422
        assert (await c.get("/api/v1/lines/line-1/batch")).json()["batch_id"] == "B"
        assert (await c.delete("/api/v1/lines/line-1/batch")).status_code == 200
        assert (await c.delete("/api/v1/lines/line-1/batch")).status_code == 409


async def test_control_api_binds_dock_doors(tmp_path: Path) -> None:
    from edge_agent.stations import Stations

    outbox = Outbox(EdgeStore(tmp_path / "s.db"))
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox)
    stations = Stations(binder, ["line-1"], ["dock-3"])
    app = create_control_app(binder, lambda: {}, stations, access=ACCESS)
    async with control_client(app) as c:
        r = await c.put("/api/v1/docks/dock-3/document", json={"type": "po", "id": "PO-9"})
        assert r.status_code == 201 and r.json()["doc_id"] == "PO-9"
        assert (await c.get("/api/v1/docks/dock-3/document")).json()["type"] == "po"
        assert (
            await c.put("/api/v1/docks/dock-9/document", json={"type": "po", "id": "X"})
        ).status_code == 404
        bad = await c.put("/api/v1/docks/dock-3/document", json={"type": "invoice", "id": "X"})
        assert bad.status_code == 422
        assert (await c.delete("/api/v1/docks/dock-3/document")).status_code == 200
        assert (await c.delete("/api/v1/docks/dock-3/document")).status_code == 409
