"""Scan rules as data: rules_cases.yaml (rules and scans), stations.yaml (the shipped
profiles and what scans mean at their stations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from device_profiles import LIBRARY
from device_profiles.schema import ScannerProfile, ScanRule, load_profile
from protocols.scanner.gs1 import parse_scan
from protocols.scanner.rules import meaning_of

HERE = Path(__file__).parent
CASES: list[dict[str, Any]] = yaml.safe_load((HERE / "rules_cases.yaml").read_text())
STATIONS: dict[str, list[list[str | None]]] = yaml.safe_load((HERE / "stations.yaml").read_text())
PROFILES = {
    path.name: path
    for path in [
        *LIBRARY.glob("scanner-*.yaml"),
        Path(__file__).parents[3] / "protocols" / "scanner" / "sample_profile.yaml",
    ]
}


def meanings(rules: list[ScanRule], scans: list[list[str | None]]) -> list[str | None]:
    found: list[str | None] = []
    for text, _ in scans:
        assert text is not None
        rule = meaning_of(parse_scan(text), rules)
        found.append(rule.meaning if rule is not None else None)
    return found


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    rules = [ScanRule.model_validate(r) for r in case["rules"]]
    assert meanings(rules, case["scans"]) == [m for _, m in case["scans"]]


@pytest.mark.parametrize("name", sorted(STATIONS))
def test_station(name: str) -> None:
    profile = load_profile(PROFILES[name])
    assert isinstance(profile, ScannerProfile)
    assert meanings(profile.rules, STATIONS[name]) == [m for _, m in STATIONS[name]]


def test_every_shipped_scanner_profile_has_station_cases() -> None:
    assert sorted(STATIONS) == sorted(PROFILES)


def test_the_matching_rule_itself_is_returned() -> None:
    rules = [ScanRule(meaning="operator", pattern="^OP-"), ScanRule(meaning="consume", ais=["10"])]
    assert meaning_of(parse_scan("]C110L1"), rules) is rules[1]
