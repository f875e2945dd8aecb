"""GET /api/v1/edges and /api/v1/edges/{edge}: every registered edge and every edge that
sent a status, with the state the fleet view shows (online, offline, silent, unknown)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from psycopg.types.json import Jsonb

from cloud_collector.auth import Role
from protocols.mqtt.contract import EdgeStatus
from tests.conftest import RunningCollector, Services


async def put_row(
    database_url: str, edge_id: str, received_ago: timedelta, interval_s: float
) -> None:
    status = EdgeStatus(
        edge_id=edge_id, state="online", time=datetime.now(UTC), interval_s=interval_s
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "insert into edge_status (edge_id, state, status_time, received_at, status) "
            "values (%s, 'online', now(), now() - %s, %s)",
            (edge_id, received_ago, Jsonb(status.model_dump(mode="json", exclude_none=True))),
        )


async def test_reading_the_fleet_needs_a_reader_key(collector: RunningCollector) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as anonymous:
        assert (await anonymous.get("/api/v1/edges")).status_code == 401
    async with collector.client(Role.importer) as importer:
        assert (await importer.get("/api/v1/edges")).status_code == 403
    async with collector.client(Role.reader) as reader:
        r = await reader.get("/api/v1/edges")
    assert r.status_code == 200
    assert r.json()["keeper"] is None  # the test collector runs no keeper in its process


async def test_registered_silent_online_and_unknown(
    services: Services, collector: RunningCollector
) -> None:
    quiet, fresh, never, stranger = (f"edge-{uuid.uuid4().hex[:8]}" for _ in range(4))
    for edge in (quiet, fresh, never):
        await services.register(edge)
    await put_row(services.database_url, quiet, timedelta(seconds=31), interval_s=10)
    await put_row(services.database_url, fresh, timedelta(seconds=25), interval_s=10)
    # Stored while the registry was not in use, or before the edge was revoked.
    await put_row(services.database_url, stranger, timedelta(seconds=1), interval_s=10)
    async with collector.client(Role.reader) as reader:
        listed = {e["edge_id"]: e for e in (await reader.get("/api/v1/edges")).json()["edges"]}
        one = (await reader.get(f"/api/v1/edges/{quiet}")).json()
        missing = await reader.get("/api/v1/edges/no-such-edge")
        gone = await reader.get(f"/api/v1/edges/{stranger}")
    assert stranger not in listed and gone.status_code == 404
    assert listed[quiet]["state"] == "silent"  # 3 intervals of 10 s without a status
    assert listed[fresh]["state"] == "online"
    assert listed[never]["state"] == "unknown" and listed[never]["status"] is None
    assert all(listed[e]["registered"] for e in (quiet, fresh, never))
    assert one["edge_id"] == quiet and one["state"] == "silent" and one["age_s"] >= 31
    assert missing.status_code == 404
    assert "tracectl edge add" in missing.json()["detail"]
