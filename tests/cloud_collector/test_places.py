"""The place hierarchy through the HTTP API: the ERP sends sites, warehouses, zones, racks
and bins (each naming the place it is part of, bins their SGLN); readers list and show
them, by id or by SGLN, with the path from the site down."""

from __future__ import annotations

import uuid

import pytest

from cloud_collector.auth import Role
from tests.conftest import RunningCollector


def hierarchy(t: str) -> list[dict]:
    """Site > warehouse > zone > rack > two bins, the second with an SGLN; sent bins first
    (the ERP's order is not the hierarchy's)."""
    return [
        {"location_id": f"BIN-1-{t}", "name": "Bin A-01-1", "kind": "bin",
         "parent_id": f"RACK-{t}"},
        {"location_id": f"BIN-2-{t}", "name": "Bin A-01-2", "kind": "bin",
         "parent_id": f"RACK-{t}", "sgln": f"urn:epc:id:sgln:0614141.00001.{t}"},
        {"location_id": f"RACK-{t}", "name": "Rack A-01", "kind": "rack",
         "parent_id": f"ZONE-{t}"},
        {"location_id": f"ZONE-{t}", "name": "Chilled zone", "kind": "zone",
         "parent_id": f"WH-{t}"},
        {"location_id": f"WH-{t}", "name": "Main warehouse", "kind": "warehouse",
         "parent_id": f"SITE-{t}"},
        {"location_id": f"SITE-{t}", "name": "Dayton plant", "kind": "site",
         "gln": "0614141000005"},
    ]  # fmt: skip


@pytest.fixture
def t() -> str:
    return uuid.uuid4().hex[:8].upper()


async def test_the_erp_sends_the_hierarchy_and_readers_walk_it(
    collector: RunningCollector, t: str
) -> None:
    async with collector.client(Role.importer) as api:
        answer = await api.put("/api/v1/erp/locations", json=hierarchy(t))
        assert answer.status_code == 200, answer.text
    async with collector.client(Role.reader) as api:
        inside = (await api.get("/api/v1/places", params={"within": f"ZONE-{t}"})).json()
        bins = (
            await api.get("/api/v1/places", params={"within": f"SITE-{t}", "kind": "bin"})
        ).json()
        shown = (await api.get(f"/api/v1/places/BIN-1-{t}")).json()
        by_sgln = await api.get(f"/api/v1/places/urn:epc:id:sgln:0614141.00001.{t}")
        unknown = await api.get(f"/api/v1/places/NOWHERE-{t}")
    assert [p["location_id"] for p in inside] == [f"BIN-1-{t}", f"BIN-2-{t}", f"RACK-{t}",
                                                  f"ZONE-{t}"]  # fmt: skip
    assert [p["location_id"] for p in bins] == [f"BIN-1-{t}", f"BIN-2-{t}"]
    assert [(s["location_id"], s["kind"]) for s in shown["path"]] == [
        (f"SITE-{t}", "site"),
        (f"WH-{t}", "warehouse"),
        (f"ZONE-{t}", "zone"),
        (f"RACK-{t}", "rack"),
        (f"BIN-1-{t}", "bin"),
    ]
    assert shown["children"] == [] and shown["stock"] == []
    assert by_sgln.status_code == 200, by_sgln.text
    assert by_sgln.json()["place"]["location_id"] == f"BIN-2-{t}"
    assert unknown.status_code == 404
    assert "PUT /api/v1/erp/locations" in unknown.json()["detail"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"kind": "shelf"}, "site"),  # names the kinds it takes
        ({"sgln": "urn:epc:id:sgtin:0614141.812345.6789"}, "is not an SGLN"),
        ({"parent_id": "SELF"}, "cannot be its own parent_id"),
    ],
)
async def test_a_place_the_hierarchy_cannot_hold_is_refused_with_the_reason(
    collector: RunningCollector, change: dict, reason: str
) -> None:
    row = {"location_id": "SELF", "name": "Bin", "kind": "bin", **change}
    async with collector.client(Role.importer) as api:
        answer = await api.put("/api/v1/erp/locations", json=[row])
    assert answer.status_code == 422
    assert reason in answer.text
