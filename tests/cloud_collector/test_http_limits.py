"""What a hostile or careless HTTP client can hold, and for how long: bogus keys take no
connection of the API's pool; bodies have a size and a time limit; statements have a
timeout; idle connections are closed; recall by condition looks at a bounded window; and
/healthz says how the API, the database and the consumer are, each on its own."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from cloud_collector import auth
from cloud_collector.api import create_app, server_options
from cloud_collector.auth import Role
from cloud_collector.consumer import IngestCounters
from cloud_collector.settings import CollectorSettings
from tests.conftest import RunningCollector, Services, free_port


@contextlib.asynccontextmanager
async def serving(settings: CollectorSettings, app: FastAPI | None = None) -> AsyncIterator[str]:
    """The API of `settings` served by uvicorn (with the options the collector runs it
    with) in this event loop; yields its base URL."""
    app = app or create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", **server_options(settings)
        )
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


def settings_for(collector: RunningCollector, **changes: object) -> CollectorSettings:
    return collector.settings.model_copy(update=changes)


async def reader_key(services: Services) -> str:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        return (await auth.issue(c, f"limits-{uuid.uuid4().hex[:8]}", Role.reader)).key


# ---- keys before connections ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/epcis/events", "/epcis/capture/1", "/api/v1/batches", "/api/v1/credentials"]
)
async def test_bogus_keys_beyond_the_pool_size_leave_valid_requests_answered(
    collector: RunningCollector, services: Services, path: str
) -> None:
    """Ten concurrent requests with bogus keys used to take all ten connections (EPCIS
    routes took one before checking the key, then waited for another to check it) and
    stall the whole API. Here the pool has 2 connections and 40 bogus requests run at once."""
    settings = settings_for(collector, api_pool_size=2, api_key_cache_s=5.0)
    app = create_app(settings)
    key = await reader_key(services)
    async with serving(settings, app) as url, httpx.AsyncClient(base_url=url, timeout=30) as api:
        pools = (app.state.read_pool, app.state.write_pool)

        def requests_num() -> int:
            return sum(p.get_stats().get("requests_num", 0) for p in pools)

        taken_before = requests_num()
        bogus = [
            api.get(path, headers={"Authorization": f"Bearer {auth.new_key()}"}) for _ in range(20)
        ] + [api.get(path, headers={"X-API-Key": "lt_same-bogus-key"}) for _ in range(20)]
        flood = asyncio.gather(*bogus)
        began = time.monotonic()
        valid = await api.get("/api/v1/batches", headers={"Authorization": f"Bearer {key}"})
        answered_in = time.monotonic() - began
        refused = await flood
        taken = requests_num() - taken_before
    assert valid.status_code == 200
    # Stalled, it would wait for the pool's 30 s timeout; the bound leaves room for a busy
    # machine (the structural proof is `taken` below).
    assert answered_in < 10.0, f"a valid request waited {answered_in:.1f} s behind bogus keys"
    assert [r.status_code for r in refused] == [401] * 40
    assert taken == 1, f"{taken} connections of the API's pool were taken; only the valid one may"
    # Keys waiting together are looked up together: a few queries, not one per request.
    assert app.state.keyring.lookups <= 5


async def test_a_key_revoked_in_the_database_stops_working_within_the_cache_time(
    collector: RunningCollector, services: Services
) -> None:
    settings = settings_for(collector, api_key_cache_s=1.0)
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        issued = await auth.issue(c, f"ttl-{uuid.uuid4().hex[:8]}", Role.reader)
        async with serving(settings) as url, httpx.AsyncClient(base_url=url) as api:
            headers = {"Authorization": f"Bearer {issued.key}"}
            assert (await api.get("/api/v1/batches", headers=headers)).status_code == 200
            assert await auth.revoke(c, issued.name)  # as tracectl, or another collector
            revoked_at = time.monotonic()
            while (await api.get("/api/v1/batches", headers=headers)).status_code == 200:
                assert time.monotonic() - revoked_at < 1.5, "still taken after the cache time"
                await asyncio.sleep(0.05)


# ---- request bodies -----------------------------------------------------------------------


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A JSON body `total` bytes long, sent chunked (no Content-Length)."""
    yield b'{"tag":"'
    sent = 8
    while sent < total - 2:
        n = min(size, total - 2 - sent)
        yield b"x" * n
        sent += n
    yield b'"}'


async def test_a_body_over_the_route_limit_is_a_413_naming_it_even_without_content_length(
    collector: RunningCollector,
) -> None:
    limit = collector.settings.api_body_bytes
    async with collector.client(Role.reader) as api:
        chunked = await api.post(
            "/api/v1/recall/by-condition",
            content=chunks(limit + 100_000),
            headers={"Content-Type": "application/json"},
        )
        declared = await api.post(
            "/api/v1/recall/by-condition",
            content=b"{" + b" " * (limit + 1) + b"}",
            headers={"Content-Type": "application/json"},
        )
    for r in (chunked, declared):
        assert r.status_code == 413, r.text
        assert "1 MiB" in r.json()["detail"] and "TRACE_API_BODY_BYTES" in r.json()["detail"]


async def test_erp_imports_take_bodies_larger_than_other_routes(
    collector: RunningCollector,
) -> None:
    """2 MiB of customers: over the general 1 MiB, within the imports' 8 MiB."""
    tag = uuid.uuid4().hex[:6]
    rows = [
        {"customer_id": f"BIG-{tag}-{i}", "name": "A customer with a long name " + "x" * 150}
        for i in range(10_000)
    ]
    async with collector.client(Role.importer) as api:
        r = await api.put("/api/v1/erp/customers", json=rows, timeout=60)
        too_big = await api.put(
            "/api/v1/erp/customers",
            content=b"[" + b" " * (collector.settings.api_import_body_bytes + 1) + b"]",
            headers={"Content-Type": "application/json"},
        )
    assert len(r.request.content) > 2 * 1024 * 1024
    assert r.status_code == 200, r.text
    assert r.json() == {"imported": 10_000}
    assert too_big.status_code == 413 and "8 MiB" in too_big.text


def read_all(sock: socket.socket, within: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True) or `within` passes."""
    sock.settimeout(0.1)
    got, deadline = b"", time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            return got, True
        got += data
    return got, False


async def test_a_client_trickling_its_body_gets_a_408_and_its_connection_closed(
    collector: RunningCollector, services: Services
) -> None:
    settings = settings_for(collector, api_body_timeout_s=1.0)
    key = await reader_key(services)
    async with serving(settings) as url:
        port = int(url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        began = time.monotonic()
        sock.sendall(
            b"POST /api/v1/recall/by-condition HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
            + f"Authorization: Bearer {key}\r\n\r\n".encode()
            + b'{"tag": "te'
        )
        answer, closed = await asyncio.to_thread(read_all, sock, 10.0)
        took = time.monotonic() - began
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"TRACE_API_BODY_TIMEOUT_S" in answer
    assert closed, "the server kept the slow client's connection open"
    # The deadline is 1 s; the margin is for a busy machine, not for the server.
    assert took < 8.0


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"GET /healthz HTTP/1.1\r\nX-Slow: "],
    ids=["nothing", "half the headers", "a header trickled"],
)
async def test_a_client_slow_with_its_headers_is_closed_at_the_deadline(
    collector: RunningCollector, sent: bytes
) -> None:
    """Slowloris: uvicorn alone waits for the rest of a request's headers forever."""
    settings = settings_for(collector, api_header_timeout_s=1.0)
    async with serving(settings) as url:
        sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        began = time.monotonic()
        sock.sendall(sent)
        if sent.endswith(b": "):
            for _ in range(8):  # a byte every 0.25 s: more bytes never push the deadline
                await asyncio.sleep(0.25)
                with contextlib.suppress(OSError):
                    sock.sendall(b"x")
        answer, closed = await asyncio.to_thread(read_all, sock, 10.0)
        took = time.monotonic() - began
        sock.close()
    assert closed, "the server kept a connection whose headers never came"
    assert took < 8.0  # deadline 1 s, trickled for 2 s: the margin is for a busy machine
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:100]


async def test_an_idle_keep_alive_connection_is_closed(
    collector: RunningCollector,
) -> None:
    settings = settings_for(collector, api_keep_alive_s=1.0)
    async with serving(settings) as url:
        port = int(url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer, closed = await asyncio.to_thread(read_all, sock, 4.0)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert closed, "an idle keep-alive connection stayed open"


# ---- statements ---------------------------------------------------------------------------


async def test_a_statement_past_its_timeout_is_cancelled_with_a_503_that_says_so(
    collector: RunningCollector, services: Services
) -> None:
    settings = settings_for(collector, api_statement_timeout_s=0.5)
    key = await reader_key(services)
    async with (
        await psycopg.AsyncConnection.connect(services.database_url) as blocker,
        serving(settings) as url,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as api,
    ):
        # A lock held elsewhere makes the batches query wait: only the timeout ends it.
        await blocker.execute("lock table batches in access exclusive mode")
        began = time.monotonic()
        r = await api.get("/api/v1/batches")
        took = time.monotonic() - began
        await blocker.rollback()
        after = await api.get("/api/v1/batches")
    assert r.status_code == 503, r.text
    assert "TRACE_API_STATEMENT_TIMEOUT_S" in r.json()["detail"]
    assert took < 8.0  # the lock is never released while it waits: only the timeout ends it
    assert after.status_code == 200  # the connection went back to the pool in order


async def test_api_connections_carry_the_statement_timeout_and_exports_a_longer_one(
    collector: RunningCollector,
) -> None:
    from cloud_collector.endpoints import export_statements

    settings = settings_for(collector, api_statement_timeout_s=7, api_export_statement_timeout_s=90)
    app = create_app(settings)
    async with serving(settings, app), app.state.read_pool.connection() as conn:
        usual = await (await conn.execute("show statement_timeout")).fetchone()
        async with export_statements(conn, settings.api_export_statement_timeout_s):
            export = await (await conn.execute("show statement_timeout")).fetchone()
        back = await (await conn.execute("show statement_timeout")).fetchone()
    assert usual == ("7s",) and export == ("90s",) and back == ("7s",)


# ---- recall by condition ------------------------------------------------------------------


async def test_recall_by_condition_bounds_its_window_and_wants_offsets(
    collector: RunningCollector,
) -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    body = {"tag": "temperature", "condition": "bad_quality", "from": start.isoformat()}
    async with collector.client(Role.reader) as api:
        too_long = await api.post(
            "/api/v1/recall/by-condition",
            json={**body, "to": (start + timedelta(days=45)).isoformat()},
        )
        naive = await api.post(
            "/api/v1/recall/by-condition",
            json={**body, "to": "2026-10-02T00:00:00"},
        )
        month = await api.post(
            "/api/v1/recall/by-condition",
            json={**body, "to": (start + timedelta(days=31)).isoformat()},
        )
    assert too_long.status_code == 422
    detail = too_long.json()["detail"]
    assert "45.0 days" in detail and "at most 31 days" in detail
    assert "TRACE_CONDITION_MAX_DAYS" in detail
    assert naive.status_code == 422 and "timezone" in naive.text
    assert month.status_code == 200, month.text


# ---- /healthz -----------------------------------------------------------------------------


async def healthz(url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as api:
        return await api.get("/healthz")


async def test_healthz_reports_api_database_and_consumer_without_a_key(
    collector: RunningCollector,
) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as api:
        r = await api.get("/healthz")
    body = r.json()
    assert r.status_code == 200
    assert body["database"]["reachable"] is True and body["database"]["error"] is None
    assert body["api"]["pool_max"] == collector.settings.api_pool_size
    consumer = body["consumer"]
    assert consumer["running"] is collector.counters.running
    assert consumer["broker_connected"] is collector.counters.broker_connected
    assert body["status"] == (
        "ok" if consumer["running"] and consumer["broker_connected"] else "degraded"
    )


async def test_healthz_says_degraded_when_the_consumer_is_down_and_null_without_one(
    collector: RunningCollector,
) -> None:
    stopped = IngestCounters(running=False, last_error="ValueError: a bad day")
    async with serving(collector.settings, create_app(collector.settings, stopped)) as url:
        degraded = (await healthz(url)).json()
    async with serving(collector.settings, create_app(collector.settings, None)) as url:
        alone = await healthz(url)
    assert degraded["status"] == "degraded"
    assert degraded["consumer"]["running"] is False
    assert degraded["consumer"]["last_error"] == "ValueError: a bad day"
    assert degraded["database"]["reachable"] is True
    assert alone.status_code == 200 and alone.json()["consumer"] is None
    assert alone.json()["status"] == "ok"


async def test_healthz_answers_at_once_while_every_pool_connection_is_taken(
    collector: RunningCollector, services: Services
) -> None:
    settings = settings_for(collector, api_pool_size=1, api_statement_timeout_s=10)
    key = await reader_key(services)
    async with (
        await psycopg.AsyncConnection.connect(services.database_url) as blocker,
        serving(settings) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as api,
    ):
        await blocker.execute("lock table batches in access exclusive mode")
        headers = {"Authorization": f"Bearer {key}"}
        stuck = [asyncio.create_task(api.get("/api/v1/batches", headers=headers)) for _ in range(2)]
        await asyncio.sleep(0.5)  # one holds the only connection, one waits for it
        began = time.monotonic()
        r = await api.get("/healthz")
        took = time.monotonic() - began
        await blocker.rollback()
        await asyncio.gather(*stuck)
    # Waiting for the pool it would take the 10 s statement timeout.
    assert took < 5.0, f"/healthz took {took:.1f} s with the pool taken"
    body = r.json()
    assert r.status_code == 200 and body["status"] == "degraded"
    assert body["api"]["busy"] is True and body["api"]["requests_waiting"] >= 1
    assert body["database"]["reachable"] is True


async def test_healthz_is_503_down_when_the_database_is_gone(
    collector: RunningCollector, services: Services
) -> None:
    name = f"trace_gone_{uuid.uuid4().hex[:6]}"
    admin_url = services.database_url.rsplit("/", 1)[0] + "/postgres"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
        await admin.execute(f"create database {name}")
        settings = settings_for(
            collector, database_url=services.database_url.rsplit("/", 1)[0] + "/" + name
        )
        async with serving(settings, create_app(settings, None)) as url:
            assert (await healthz(url)).json()["status"] == "ok"
            await admin.execute(f"drop database {name} with (force)")
            began = time.monotonic()
            r = await healthz(url)
            took = time.monotonic() - began
            async with httpx.AsyncClient(base_url=url, timeout=30) as api:
                headers = {"Authorization": f"Bearer {auth.new_key()}"}
                keyed = await api.get("/api/v1/batches", headers=headers)
    assert keyed.status_code == 503 and keyed.headers["Retry-After"]
    assert "could not be checked" in keyed.json()["detail"]
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "down" and body["database"]["reachable"] is False
    assert body["database"]["error"]
    assert took < 8.0
