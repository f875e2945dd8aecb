"""The batch parameters endpoint: unknown batches and batches without readings say so."""

from __future__ import annotations

import json
import uuid

import psycopg

from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from protocols.mqtt import topics
from tests.conftest import RunningCollector, Services


async def test_unknown_batch_is_a_404_that_says_what_to_do(collector: RunningCollector) -> None:
    async with collector.client(Role.reader) as api:
        r = await api.get("/api/v1/batches/NO-SUCH-BATCH/parameters")
    assert r.status_code == 404
    assert "batch 'NO-SUCH-BATCH' is unknown" in r.json()["detail"]
    assert "GET /api/v1/batches" in r.json()["detail"]


async def test_a_batch_without_readings_states_the_gap(
    services: Services, collector: RunningCollector
) -> None:
    edge, batch = f"edge-{uuid.uuid4().hex[:6]}", f"B-{uuid.uuid4().hex[:6]}"
    event = {
        "kind": "batch_started",
        "seq": 0,
        "time": "2026-11-25T10:00:00+01:00",
        "line": "line-9",
        "batch": batch,
        "by": "mes",
    }
    payload = json.dumps({"edge_id": edge, "stream": "events", "epoch": "e", "records": [event]})
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        await ingest(c, topics.data(edge, "events"), payload.encode())
    async with collector.client(Role.reader) as api:
        body = (await api.get(f"/api/v1/batches/{batch}/parameters")).json()
        listed = (await api.get("/api/v1/batches", params={"limit": 1000})).json()
    assert body["tags"] == []
    assert body["gaps"] == [f"batch {batch} has no readings"]
    assert body["batch"]["started_at"] == "2026-11-25T09:00:00Z"
    assert batch in [b["batch_id"] for b in listed]
