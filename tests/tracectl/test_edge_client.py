"""`tracectl batch` and `tracectl dock` on the line PC: they read the edge's token file
(from the same settings as the edge) and send it; without it they say where it should be."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from device_profiles.numbering import BatchNumbering
from edge_agent.batch_context import BatchContext
from edge_agent.batch_numbers import BatchNumbers
from edge_agent.binding import Binder
from edge_agent.control import ControlAccess, create_control_app
from edge_agent.control_token import load_or_create_token
from edge_agent.outbox import Outbox
from edge_agent.stations import Stations
from edge_agent.store import EdgeStore
from tests.conftest import free_port
from tracectl.__main__ import main


@contextlib.asynccontextmanager
async def control_api(state: Path, binder: Binder) -> AsyncIterator[str]:
    port = free_port()
    access = ControlAccess.of(load_or_create_token(state / "control.token"), "127.0.0.1", port)
    stations = Stations(binder, ["line-1"], ["dock-3"])
    app = create_control_app(binder, dict, stations, access=access)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def tracectl(*args: str) -> int:
    try:
        await asyncio.to_thread(main, list(args))
    except SystemExit as done:
        return int(done.code or 0)
    return 0


async def test_tracectl_sends_the_token_of_the_edge_s_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "edge"
    outbox = Outbox(EdgeStore(state / "outbox.db"))
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox)
    async with control_api(state, binder) as url:
        monkeypatch.setenv("TRACE_EDGE_STATE_DIR", str(state))
        assert (
            await tracectl("batch", "start", "line-1", "WO-1", "--by", "op-7", "--edge", url) == 0
        )
        active = binder.context.active("line-1")
        assert active is not None and (active.batch_id, active.started_by) == ("WO-1", "op-7")
        assert await tracectl("dock", "bind", "dock-3", "po", "PO-1", "--edge", url) == 0
        assert "bound to po PO-1" in capsys.readouterr().out

        # Another state folder: no token there. Reads still work on this PC, changes do not.
        monkeypatch.setenv("TRACE_EDGE_STATE_DIR", str(tmp_path / "elsewhere"))
        assert await tracectl("batch", "show", "line-1", "--edge", url) == 0
        assert "batch WO-1" in capsys.readouterr().out
        assert await tracectl("batch", "end", "line-1", "--edge", url) == 1
        err = capsys.readouterr().err
        assert "cannot read the control API token" in err
        assert str(tmp_path / "elsewhere" / "control.token") in err

        # A token file of another edge: the API refuses it, and tracectl says which it sent.
        load_or_create_token(tmp_path / "elsewhere" / "control.token")
        assert await tracectl("batch", "end", "line-1", "--edge", url) == 1
        err = capsys.readouterr().err
        assert "answered 401" in err and "tracectl sent the token of" in err
        assert binder.context.active("line-1") is not None

        # TRACE_EDGE_CONTROL_TOKEN_FILE points at the edge's own, wherever it is.
        monkeypatch.setenv("TRACE_EDGE_CONTROL_TOKEN_FILE", str(state / "control.token"))
        assert await tracectl("batch", "end", "line-1", "--edge", url) == 0
        assert binder.context.active("line-1") is None


async def test_tracectl_starts_a_batch_without_an_id_by_the_line_s_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "edge"
    outbox = Outbox(EdgeStore(state / "outbox.db"))
    rule = BatchNumbering.model_validate(
        {"pattern": "{line}-{seq}", "sequence": {"width": 4, "reset": "never"}}
    )
    numbers = BatchNumbers(outbox.store, {"line-1": rule})
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox, numbers=numbers)
    monkeypatch.setenv("TRACE_EDGE_STATE_DIR", str(state))
    async with control_api(state, binder) as url:
        assert await tracectl("batch", "start", "line-1", "--edge", url) == 0
        assert "line line-1: batch line-1-0001 started at" in capsys.readouterr().out
        active = binder.context.active("line-1")
        assert active is not None and active.started_by == "tracectl"
        assert await tracectl("batch", "end", "line-1", "--edge", url) == 0
        numbers.rules = {}  # a site version without the rule
        assert await tracectl("batch", "start", "line-1", "--edge", url) == 1
        assert "line line-1 has no numbering rule: give the batch id" in capsys.readouterr().err
