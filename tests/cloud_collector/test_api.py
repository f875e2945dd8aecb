"""The app's routes, one module router per API area; the batch parameters endpoint: unknown
batches and batches without readings say so."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from cloud_collector import pages
from cloud_collector.api import create_app
from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from cloud_collector.routes import ROUTERS
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from tests.cloud_collector.pages.seed import HOT, OVEN_READINGS, seed
from tests.cloud_collector.plant import DOUGH_GTIN
from tests.cloud_collector.test_auth import api_routes
from tests.conftest import RunningCollector, Services


def test_every_route_is_a_module_router_s_and_none_is_a_closure() -> None:
    """create_app only includes routers: a route defined inside a function (over the app,
    its settings or a connection factory) has a second home a reader must find."""
    router_paths = {r.path for router in (*ROUTERS, *pages.ROUTERS) for r in router.routes}
    misplaced = []
    for route in api_routes(create_app(CollectorSettings())):
        endpoint = route.dependant.call
        if "<locals>" in endpoint.__qualname__ or route.path not in router_paths:
            misplaced.append(f"{route.path}: {endpoint.__module__}.{endpoint.__qualname__}")
    assert misplaced == []


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


async def test_erp_rows_the_database_refuses_are_422s_that_name_the_row(
    collector: RunningCollector,
) -> None:
    """Found by schemathesis (tests/cloud_collector/test_openapi_fuzz.py): each was a 500."""
    tag = uuid.uuid4().hex[:6]
    async with collector.client(Role.importer) as api:
        unknown_customer = await api.put(
            "/api/v1/erp/shipments", json=[{"shipment": f"SH-{tag}", "customer_id": f"NO-{tag}"}]
        )
        nul = await api.put(
            "/api/v1/erp/customers", json=[{"customer_id": f"C-{tag}", "name": "Bakery\u0000Co"}]
        )
    assert unknown_customer.status_code == 422
    assert f"(customer_id)=(NO-{tag})" in unknown_customer.text
    assert "customers before shipments" in unknown_customer.text
    assert nul.status_code == 422 and "NUL" in nul.text
    assert nul.json()["detail"][0]["loc"] == ["body", 0, "name"]


async def test_a_value_the_database_cannot_take_is_a_422_whatever_the_route(
    collector: RunningCollector,
) -> None:
    async with collector.client(Role.reader) as api:
        r = await api.get("/api/v1/lots/A%00B/trace/forward")
        tag = await api.post(
            "/api/v1/recall/by-condition",
            json={
                "tag": "t\u0000",
                "condition": "bad_quality",
                "from": "2026-11-01T00:00:00Z",
                "to": "2026-11-02T00:00:00Z",
            },
        )
    assert r.status_code in (404, 422), r.text
    assert tag.status_code == 422 and "NUL" in tag.text


async def test_an_admin_cannot_revoke_the_key_it_calls_with(collector: RunningCollector) -> None:
    own = f"test-{collector.settings.collector_id.rsplit('-', 1)[1]}-admin"
    async with collector.client(Role.admin) as admin:
        revoked = await admin.delete(f"/api/v1/credentials/{own}")
        replaced = await admin.post(
            "/api/v1/credentials", json={"name": own, "role": "admin", "replace": True}
        )
        still = await admin.get("/api/v1/credentials")
    assert revoked.status_code == 409 and "tracectl credential revoke" in revoked.text
    assert replaced.status_code == 409
    assert still.status_code == 200


async def test_the_batch_list_is_filtered_by_line_product_start_and_excursion(
    services: Services, collector: RunningCollector
) -> None:
    plant = await seed(services, collector)  # B1 ran hot; B1 and RW made dough; B3 cake
    b1, b2, b3, rw = (plant.batch(n) for n in ("B1", "B2", "B3", "RW"))
    now = datetime.now(UTC)
    async with collector.client(Role.reader) as api:

        async def listed(**params: str) -> dict[str, dict]:
            r = await api.get("/api/v1/batches", params={"limit": "1000", **params})
            assert r.status_code == 200, r.text
            return {b["batch_id"]: b for b in r.json()}

        dough = await listed(product=DOUGH_GTIN)
        hot = await listed(line="line-1", excursion="true")
        # The events set no start: a batch counts from when the collector first saw it.
        recent = await listed(**{"from": (now - timedelta(hours=1)).isoformat()})
        later = await listed(**{"from": (now + timedelta(hours=1)).isoformat()})
        earlier = await listed(to=(now - timedelta(hours=1)).isoformat())
        naive = await api.get("/api/v1/batches", params={"from": "2026-11-20T00:00:00"})
        nul = await api.get("/api/v1/batches", params={"line": "line\x001"})
    assert {b1, rw} <= dough.keys() and not {b2, b3} & dough.keys()
    assert b1 in hot and not {b2, b3, rw} & hot.keys()
    assert hot[b1]["readings"] == OVEN_READINGS and hot[b1]["excursions"] == len(HOT)
    assert hot[b1]["products"] == [DOUGH_GTIN]  # no product name known: its GTIN
    assert {b1, b2, b3, rw} <= recent.keys()
    assert not {b1, b2, b3, rw} & (later.keys() | earlier.keys())
    assert naive.status_code == 422 and "timezone" in naive.text
    assert nul.status_code == 422
