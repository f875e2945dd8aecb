"""The control API: changes need the token of the edge's token file, every request must
name the API in its Host header, what the contract refuses is answered 422 before anything
changes, and the quarantine can be looked at."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.control import ControlAccess, create_control_app
from edge_agent.control_token import ControlTokenError, load_or_create_token, read_token
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.stations import Stations
from edge_agent.store import EdgeStore

TOKEN = "a-test-token-of-enough-length"
ORIGIN = "http://127.0.0.1:8100"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def edge(tmp_path: Path) -> tuple[Binder, Stations]:
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    binder = Binder(BatchContext(outbox.store, ["line-1"]), outbox)
    return binder, Stations(binder, ["line-1"], ["dock-3"])


def client(
    edge: tuple[Binder, Stations],
    base_url: str = ORIGIN,
    peer: str = "127.0.0.1",
    names: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> httpx.AsyncClient:
    binder, stations = edge
    access = ControlAccess.of(TOKEN, host, 8100, names, Path("/var/lib/edge/control.token"))
    app = create_control_app(binder, lambda: {"ok": True}, stations, access=access)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(peer, 50000)), base_url=base_url
    )


async def test_changes_need_the_token_and_the_refusal_names_the_file(
    edge: tuple[Binder, Stations],
) -> None:
    binder, _ = edge
    body = {"batch_id": "WO-1", "by": "op"}
    async with client(edge) as c:
        missing = await c.put("/api/v1/lines/line-1/batch", json=body)
        wrong = await c.put(
            "/api/v1/lines/line-1/batch", json=body, headers={"Authorization": "Bearer nope"}
        )
        for refused in (missing, wrong):
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "/var/lib/edge/control.token" in refused.json()["detail"]
        assert (
            await c.put("/api/v1/docks/dock-3/document", json={"type": "po", "id": "PO-1"})
        ).status_code == 401
        assert (await c.delete("/api/v1/lines/line-1/batch")).status_code == 401
        assert binder.context.active("line-1") is None
        assert binder.outbox.take(EVENTS, 10) == []  # nothing changed
        ok = await c.put("/api/v1/lines/line-1/batch", json=body, headers=AUTH)
        assert ok.status_code == 201, ok.text
        # Reads from this PC stay open.
        assert (await c.get("/api/v1/status")).json() == {"ok": True}
        assert (await c.get("/api/v1/lines/line-1/batch")).json()["batch_id"] == "WO-1"


async def test_reads_from_off_this_pc_need_the_token_too(edge: tuple[Binder, Stations]) -> None:
    async with client(edge, peer="10.1.2.3", host="0.0.0.0", names=("line-pc-3",)) as c:
        assert (await c.get("/api/v1/status")).status_code == 401
        assert (await c.get("/api/v1/quarantine")).status_code == 401
        assert (await c.get("/api/v1/status", headers=AUTH)).status_code == 200
    async with client(edge, "http://line-pc-3:8100", peer="10.1.2.3", names=("line-pc-3",)) as c:
        assert (await c.get("/api/v1/status", headers=AUTH)).status_code == 200


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (ORIGIN, True),
        ("http://localhost:8100", True),
        ("http://LOCALHOST:8100", True),
        ("http://[::1]:8100", True),
        ("http://line-pc-3:8100", True),  # a configured name
        ("http://rebound.attacker.example:8100", False),  # DNS rebinding to 127.0.0.1
        ("http://127.0.0.1:8101", False),  # another port: another service's name
        ("http://127.0.0.1", False),
        ("http://0.0.0.0:8100", False),
    ],
)
async def test_only_the_api_s_own_host_names_are_answered(
    edge: tuple[Binder, Stations], origin: str, allowed: bool
) -> None:
    async with client(edge, origin, names=("line-pc-3",), host="0.0.0.0") as c:
        for request in (
            c.build_request("GET", "/api/v1/status"),
            c.build_request(
                "PUT", "/api/v1/lines/line-1/batch", json={"batch_id": "B"}, headers=AUTH
            ),
        ):
            r = await c.send(request)
            if allowed:
                assert r.status_code in (200, 201, 409), r.text
            else:
                assert r.status_code == 400
                assert "TRACE_EDGE_CONTROL_HOST_NAMES" in r.json()["detail"]
    assert (edge[0].context.active("line-1") is not None) == allowed


async def test_a_request_without_a_host_header_is_refused(edge: tuple[Binder, Stations]) -> None:
    async with client(edge) as c:
        request = c.build_request("GET", "/api/v1/status")
        del request.headers["host"]
        assert (await c.send(request)).status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("PUT", "/api/v1/lines/line-1/batch", {"json": {"batch_id": "B" * 129}}, "batch_id"),
        ("PUT", "/api/v1/lines/line-1/batch", {"json": {"batch_id": "B\x00"}}, "batch_id"),
        (
            "PUT",
            "/api/v1/lines/line-1/batch",
            {"json": {"batch_id": "B", "by": "o" * 129}},
            "by",
        ),
        ("PUT", "/api/v1/lines/line-1/batch", {"content": '{"batch_id": "\\ud800"}'}, "batch_id"),
        (
            "PUT",
            "/api/v1/docks/dock-3/document",
            {"json": {"type": "po", "id": "P" * 129}},
            "id",
        ),
        (
            "PUT",
            "/api/v1/docks/dock-3/document",
            {"json": {"type": "po", "id": "PO-1", "by": "a\x00"}},
            "by",
        ),
    ],
)
async def test_what_the_contract_refuses_is_answered_422_and_changes_nothing(
    edge: tuple[Binder, Stations], method: str, path: str, kwargs: dict, field: str
) -> None:
    binder, stations = edge
    async with client(edge) as c:
        headers = {**AUTH, "Content-Type": "application/json"}
        r = await c.request(method, path, headers=headers, **kwargs)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][-1] == field
    assert binder.context.active("line-1") is None and stations.document("dock-3") is None
    assert binder.outbox.take(EVENTS, 10) == []


async def test_ending_a_batch_by_someone_the_contract_refuses_is_422(
    edge: tuple[Binder, Stations],
) -> None:
    binder, _ = edge
    async with client(edge) as c:
        await c.put("/api/v1/lines/line-1/batch", json={"batch_id": "WO-1"}, headers=AUTH)
        for by in ("x" * 129, "a\x00b"):
            r = await c.delete("/api/v1/lines/line-1/batch", params={"by": by}, headers=AUTH)
            assert r.status_code == 422, r.text
        assert binder.context.active("line-1") is not None  # still running


async def test_the_quarantine_is_listed_newest_first_with_the_reason(
    edge: tuple[Binder, Stations],
) -> None:
    binder, _ = edge
    binder.start_batch("line-1", "WO-1", "op")
    binder.end_batch("line-1", "op")
    outbox = binder.outbox
    assert [s for s, _ in outbox.take(EVENTS, 10)] == [0, 1, 2]
    outbox.quarantine(EVENTS, outbox.epoch, 0, 2, "differs from what was committed under 0..2")
    async with client(edge) as c:
        body = (await c.get("/api/v1/quarantine", params={"limit": 2})).json()
        assert body["count"] == 3 and len(body["records"]) == 2
        assert body["last_refusal"]["reason"] == "differs from what was committed under 0..2"
        assert [r["seq"] for r in body["records"]] == [2, 1]
        assert body["records"][1]["record"]["kind"] == "batch_ended"
        assert (await c.get("/api/v1/quarantine", params={"limit": 0})).status_code == 422


def test_the_token_file_is_made_private_once_and_a_shared_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "control.token"
    token = load_or_create_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(path) == token == read_token(path)
    os.chmod(path, 0o644)
    with pytest.raises(ControlTokenError, match=f"chmod 600 {path}"):
        load_or_create_token(path)
    assert read_token(path) == token  # a client only needs to read it
    path.write_text("\n")
    os.chmod(path, 0o600)
    with pytest.raises(ControlTokenError, match="no usable token"):
        load_or_create_token(path)
    with pytest.raises(ControlTokenError, match="TRACE_EDGE_STATE_DIR"):
        read_token(tmp_path / "missing.token")
