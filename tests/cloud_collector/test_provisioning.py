"""The provisioning registry over the real API and database: profiles and sites in versions
with author, comment and hash, diffs between any two, roles, edges that must be registered,
invalid content refused with its problems, rollback as a new version, and the audit."""

from __future__ import annotations

import copy
import hashlib
import uuid
from typing import Any

from cloud_collector.auth import Role
from device_profiles.schema import read_yaml
from device_profiles.sites import bundle_site_file, canonical_json
from tests.conftest import ROOT, RunningCollector, Services

PROFILE = ROOT / "device_profiles" / "modbus-tcp-temperature-pressure-controller.yaml"


def profile(name: str) -> dict[str, Any]:
    data: dict[str, Any] = read_yaml(PROFILE)
    data["name"] = name
    return data


def site(edge_id: str, device: str = "tpc-1") -> dict[str, Any]:
    doc = bundle_site_file(ROOT / "deploy" / "demo" / "site.yaml")
    doc["edge_id"] = edge_id
    doc["lines"][0]["devices"][0]["profile"]["name"] = device
    return doc


async def test_profile_versions_diff_and_roles(collector: RunningCollector) -> None:
    name = f"tpc-{uuid.uuid4().hex[:8]}"
    first = profile(name)
    second = copy.deepcopy(first)
    second["tags"][0]["address"] = 10  # a register address fixed
    second["tags"].append(
        {"name": "flow", "table": "input", "address": 20, "data_type": "uint16", "unit": "m3/h"}
    )
    async with collector.client(Role.provisioner) as api:
        one = await api.post("/api/v1/provisioning/profiles", json={"content": first})
        assert one.status_code == 201, one.text
        two = await api.post(
            "/api/v1/provisioning/profiles", json={"content": second, "comment": "flow meter"}
        )
        assert two.status_code == 201, two.text
    v1, v2 = one.json(), two.json()
    assert (v1["version"], v2["version"]) == (1, 2)
    assert v2["author"] == f"test-{__import__('os').getpid()}-provisioner"
    assert v2["comment"] == "flow meter"
    assert v1["sha256"] == hashlib.sha256(canonical_json(first).encode()).hexdigest()

    async with collector.client(Role.reader) as api:
        refused = await api.post("/api/v1/provisioning/profiles", json={"content": first})
        assert refused.status_code == 403
        listed = (await api.get(f"/api/v1/provisioning/profiles/{name}")).json()
        assert [v["version"] for v in listed] == [2, 1]
        shown = (await api.get(f"/api/v1/provisioning/profiles/{name}/versions/1")).json()
        assert shown["content"] == first
        diff = (await api.get(f"/api/v1/provisioning/profiles/{name}/diff?from=1&to=2")).json()
        assert "tag flow added" in diff["changes"]
        assert "tag temperature changed" in diff["changes"]
        assert "-- address: 0\n" in diff["diff"] and "+- address: 10\n" in diff["diff"]
        missing = await api.get(f"/api/v1/provisioning/profiles/{name}/versions/9")
        assert missing.status_code == 404 and "version 9" in missing.json()["detail"]


async def test_invalid_profile_is_refused_with_its_problems(collector: RunningCollector) -> None:
    bad = profile(f"tpc-{uuid.uuid4().hex[:8]}")
    bad["tags"][0]["data_type"] = "float33"
    bad["pollinterval"] = 1
    async with collector.client(Role.provisioner) as api:
        answer = await api.post("/api/v1/provisioning/profiles", json={"content": bad})
        checked = await api.post("/api/v1/provisioning/profiles/validate", json={"content": bad})
    assert answer.status_code == 422
    problems = answer.json()["detail"]["problems"]
    assert any("tags[0].data_type" in p for p in problems), problems
    assert any("pollinterval: unknown key" in p for p in problems), problems
    assert checked.json() == {"ok": False, "problems": problems}


async def test_sites_belong_to_registered_edges(
    services: Services, collector: RunningCollector
) -> None:
    edge = f"prov-{uuid.uuid4().hex[:8]}"
    async with collector.client(Role.provisioner) as api:
        unknown = await api.post(
            f"/api/v1/provisioning/sites/{edge}", json={"content": site(edge), "push": False}
        )
        assert unknown.status_code == 404
        assert f"tracectl edge add {edge}" in unknown.json()["detail"]
        await services.register(edge)
        other = await api.post(
            f"/api/v1/provisioning/sites/{edge}", json={"content": site("x"), "push": False}
        )
        assert other.status_code == 422
        assert "names edge 'x'" in other.json()["detail"]["problems"][0]
        twice = site(edge)
        twice["lines"][0]["devices"].append(twice["lines"][0]["devices"][0])
        dup = await api.post(
            f"/api/v1/provisioning/sites/{edge}", json={"content": twice, "push": False}
        )
        assert dup.status_code == 422
        assert "also used in lines[0].devices[0]" in dup.json()["detail"]["problems"][0]


async def test_site_versions_diff_rollback_and_audit(
    services: Services, collector: RunningCollector
) -> None:
    edge = f"prov-{uuid.uuid4().hex[:8]}"
    await services.register(edge)
    first = site(edge)
    second = copy.deepcopy(first)
    second["lines"][0]["devices"][0]["connection"]["port"] = 15999
    second["lines"].append({"id": "line-2", "devices": []})
    async with collector.client(Role.provisioner) as api:
        for content in (first, second):
            made = await api.post(
                f"/api/v1/provisioning/sites/{edge}", json={"content": content, "push": False}
            )
            assert made.status_code == 201, made.text
            assert made.json()["pushed"] is False
        back = await api.post(
            f"/api/v1/provisioning/sites/{edge}/rollback", json={"version": 1, "push": False}
        )
        assert back.status_code == 201, back.text
        assert back.json()["version"]["version"] == 3
        assert back.json()["version"]["restores"] == 1
        diff = (await api.get(f"/api/v1/provisioning/sites/{edge}/diff?from=1&to=2")).json()
        same = (await api.get(f"/api/v1/provisioning/sites/{edge}/diff?from=1&to=3")).json()
        audit = (await api.get(f"/api/v1/provisioning/audit?subject=site&name={edge}")).json()
        listed = (await api.get("/api/v1/provisioning/sites")).json()
    assert "station line-2: added" in diff["changes"]
    assert "device tpc-1: connection changed" in diff["changes"]
    assert same["changes"] == ["no change"] and same["diff"] == ""
    assert [(a["action"], a["version"]) for a in audit] == [
        ("rolled_back", 3),
        ("site_created", 2),
        ("site_created", 1),
    ]
    assert audit[0]["actor"].endswith("-provisioner")
    assert any(s["name"] == edge and s["version"] == 3 for s in listed)
