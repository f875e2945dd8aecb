"""The committed JSON Schema is the one the models generate, and it accepts the library."""

from __future__ import annotations

import json

import yaml

from device_profiles import LIBRARY
from device_profiles.schema import PROTOCOLS, json_schema

COMMITTED = LIBRARY / "profile.schema.json"


def test_committed_schema_matches_the_models() -> None:
    assert json.loads(COMMITTED.read_text()) == json.loads(json.dumps(json_schema())), (
        "device_profiles/profile.schema.json is stale: run `tracectl profile schema "
        "> device_profiles/profile.schema.json`"
    )


def test_schema_names_every_protocol_and_forbids_unknown_keys() -> None:
    schema = json_schema()
    assert set(schema["discriminator"]["mapping"]) == set(PROTOCOLS)
    for name, definition in schema["$defs"].items():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False, name


def test_library_profiles_are_yaml_objects_with_a_version() -> None:
    for path in LIBRARY.glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["profile_version"] == 1, path
