"""The self-contained site document: one hash whatever the key order, every problem at once,
and the dry run of an apply (a device moved to another line keeps its name, so its
history, and is moved, not restarted, unless its profile changed too; unchanged devices are
left alone)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from device_profiles import LIBRARY
from device_profiles.schema import read_yaml
from device_profiles.sites import (
    SiteDocumentError,
    canonical_json,
    content_hash,
    resolve_site,
    site_changes,
)

MODBUS = read_yaml(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")


def named(name: str) -> dict[str, Any]:
    return {"profile": {**copy.deepcopy(MODBUS), "name": name}}


SITE: dict[str, Any] = {
    "edge_id": "edge-1",
    "lines": [
        {"id": "line-1", "devices": [named("tpc-a"), named("tpc-b")]},
        {"id": "line-2", "devices": []},
    ],
}


def test_the_hash_does_not_depend_on_key_order() -> None:
    reordered = dict(reversed(list(SITE.items())))
    assert canonical_json(reordered) == canonical_json(SITE)
    assert content_hash(canonical_json(reordered)) == content_hash(canonical_json(SITE))
    with pytest.raises(SiteDocumentError, match="not storable as JSON"):
        canonical_json({"x": float("nan")})


def test_a_device_moved_to_another_line_is_a_move_and_the_rest_stays() -> None:
    moved = copy.deepcopy(SITE)
    moved["lines"][1]["devices"].append(moved["lines"][0]["devices"].pop(1))
    moved["lines"].append({"id": "line-3", "devices": [named("tpc-c")]})
    changes = site_changes(resolve_site(SITE), resolve_site(moved))
    assert changes.moved == {"tpc-b": ("line-1", "line-2")} and changes.changed == {}
    assert changes.added == ["tpc-c"] and changes.removed == []
    assert changes.unchanged == ["tpc-a"] and changes.stations_added == ["line-3"]
    assert changes.restarted == []  # a move is no restart
    assert "device tpc-b: moved from line-1 to line-2" in changes.lines()


def test_a_device_moved_and_changed_restarts_at_its_new_line() -> None:
    moved = copy.deepcopy(SITE)
    device = moved["lines"][0]["devices"].pop(1)
    device["connection"] = {"port": 1502}
    moved["lines"][1]["devices"].append(device)
    changes = site_changes(resolve_site(SITE), resolve_site(moved))
    assert changes.moved == {} and changes.restarted == ["tpc-b"]
    assert changes.changed["tpc-b"][0] == "moved from line-1 to line-2"


def test_every_problem_is_reported_at_once_with_its_place() -> None:
    bad = copy.deepcopy(SITE)
    bad["lines"][0]["devices"][0]["profile"]["tags"][0]["data_type"] = "float33"
    bad["lines"][0]["devices"][1]["connection"] = {"port": 0}
    bad["lines"][1]["devices"].append(named("tpc-a"))
    with pytest.raises(SiteDocumentError) as refused:
        resolve_site(bad, "site v2")
    problems = refused.value.problems
    assert any(p.startswith("lines[0].devices[0].profile: tags[0].data_type") for p in problems)
    assert any(
        p.startswith("lines[0].devices[1].profile with lines[0].devices[1].connection: ")
        and "connection.port" in p
        for p in problems
    )
    assert not any("tpc-a" in p and "also used" in p for p in problems)  # its profile failed
    assert str(refused.value).startswith("site v2: ")
