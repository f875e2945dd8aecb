"""Every shipped profile is valid; invalid ones produce every error with its path and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from device_profiles import LIBRARY
from device_profiles.schema import ProfileError, load_profile, parse_profile

SHIPPED = sorted(LIBRARY.glob("*.yaml")) + sorted(
    Path(__file__).parents[2].glob("protocols/*/sample_profile.yaml")
)
INVALID = yaml.safe_load((Path(__file__).parent / "invalid" / "cases.yaml").read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_profiles_are_valid(path: Path) -> None:
    assert load_profile(path).name


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_profiles_name_every_error(case: dict) -> None:
    with pytest.raises(ProfileError) as err:
        parse_profile(case["profile"], "p.yaml")
    assert err.value.problems == case["errors"]


def test_a_file_that_is_not_yaml_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tags: [unclosed")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(bad)


def test_opcua_certificate_paths_are_relative_to_the_profile(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "plc.yaml").write_text(
        yaml.safe_dump(
            {
                "profile_version": 1,
                "name": "plc",
                "protocol": "opcua",
                "connection": {
                    "endpoint": "opc.tcp://plc:4840",
                    "security": {
                        "mode": "Sign",
                        "certificate": "pki/edge.der",
                        "private_key": "/etc/edge/key.pem",
                    },
                },
                "tags": [{"name": "t", "node_id": "ns=2;s=T"}],
            }
        )
    )
    security = load_profile(folder / "plc.yaml").connection.security  # type: ignore[union-attr]
    assert security.certificate == folder / "pki" / "edge.der"
    assert security.private_key == Path("/etc/edge/key.pem")
