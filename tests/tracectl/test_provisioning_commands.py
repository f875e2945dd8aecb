"""`tracectl profile|site create|list|show|diff|validate|rollback|audit` against the running
collector: what a technician types, what it prints, and one line (never a traceback) when
the content is refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from cloud_collector.auth import Role
from tests.conftest import ROOT, RunningCollector, Services
from tests.tracectl.test_collector_commands import Run

PROFILE = ROOT / "device_profiles" / "modbus-tcp-temperature-pressure-controller.yaml"


@pytest.fixture
def provisioner(
    collector: RunningCollector, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    monkeypatch.setenv("TRACE_API_URL", collector.api_url)
    monkeypatch.setenv("TRACE_API_KEY", collector.keys[Role.provisioner])
    return Run(capsys)


def write_site(folder: Path, edge: str, port: int) -> Path:
    site = folder / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "edge_id": edge,
                "lines": [
                    {
                        "id": "line-1",
                        "devices": [{"profile": str(PROFILE), "connection": {"port": port}}],
                    }
                ],
            }
        )
    )
    return site


async def test_site_create_diff_rollback_audit(
    tmp_path: Path, services: Services, provisioner: Run
) -> None:
    edge = f"cli-{uuid.uuid4().hex[:8]}"
    await services.register(edge)
    site = write_site(tmp_path, edge, 15020)
    code, out, err = await provisioner("site", "create", str(site), "-m", "first", "--no-push")
    assert code == 0, err
    assert out.startswith(f"site {edge} version 1 (sha256 ")
    write_site(tmp_path, edge, 15021)
    assert (await provisioner("site", "create", str(site), "--no-push"))[0] == 0
    code, out, _ = await provisioner("site", "diff", edge, "1", "2")
    assert code == 0
    assert out.splitlines()[0] == "* device tp-controller-1: connection changed"
    assert "-      port: 15020" in out and "+      port: 15021" in out
    code, out, _ = await provisioner("site", "rollback", edge, "1", "--no-push")
    assert code == 0 and f"rolled back to version 1 as {edge} version 3" in out
    code, out, _ = await provisioner("site", "show", edge)
    assert code == 0 and "port: 15020" in out and "version 3" in out.splitlines()[0]
    code, out, _ = await provisioner("site", "list", edge)
    assert code == 0 and "(restores 1)" in out
    code, out, _ = await provisioner("site", "audit", edge)
    assert code == 0
    actions = {"rolled_back", "site_created"}
    assert [w for line in out.splitlines()[1:] for w in line.split() if w in actions] == [
        "rolled_back",
        "site_created",
        "site_created",
    ]


async def test_a_refused_profile_says_each_problem(tmp_path: Path, provisioner: Run) -> None:
    bad = yaml.safe_load(PROFILE.read_text())
    bad["name"] = f"p-{uuid.uuid4().hex[:8]}"
    bad["tags"][1]["address"] = -3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, _, err = await provisioner("profile", "create", str(path))
    assert code == 1
    assert "answered 422: the content is invalid" in err
    assert "tags[1].address" in err


async def test_site_validate_names_the_device_and_field(tmp_path: Path, provisioner: Run) -> None:
    profile = yaml.safe_load(PROFILE.read_text())
    profile["tags"][0]["data_type"] = "float33"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(profile))
    (tmp_path / "site.yaml").write_text(
        "edge_id: e1\nlines:\n  - id: l1\n    devices:\n      - profile: p.yaml\n"
    )
    code, out, err = await provisioner("site", "validate", str(tmp_path / "site.yaml"))
    assert code == 1
    assert "lines[0].devices[0].profile: tags[0].data_type" in out
    assert "1 of 1 site files have errors" in err
