"""Batch numbering rules in a site document: a rule whose ids could come round again, or that
two lines would share, is refused with every problem named by its place (invalid cases kept
as data); a PLC run tag on a line with no rule; the production day and shift of a moment,
in the plant's time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_collector.settings import plant_zone_named
from device_profiles import LIBRARY
from device_profiles.numbering import BatchNumbering
from device_profiles.schema import read_yaml
from device_profiles.sites import SiteDocumentError, resolve_site, site_changes

INVALID = yaml.safe_load((Path(__file__).parent / "invalid" / "numbering.yaml").read_text())


@pytest.mark.parametrize("case", INVALID, ids=[c["name"] for c in INVALID])
def test_invalid_rules_name_every_error(case: dict[str, Any]) -> None:
    document = {"edge_id": "e", "lines": case["lines"], "docks": case.get("docks", [])}
    with pytest.raises(SiteDocumentError) as err:
        resolve_site(document, "site v3")
    assert err.value.problems == case["errors"]


THREE_SHIFTS = BatchNumbering.model_validate(
    {
        "pattern": "{line}-{date:%y%m%d}-{shift}{seq}",
        "time_zone": "Europe/Berlin",  # UTC+1 in December, UTC+2 in July
        "shifts": [
            {"name": "A", "start": "06:00"},
            {"name": "B", "start": "14:00"},
            {"name": "C", "start": "22:00"},
        ],
        "sequence": {"reset": "shift"},
    }
)


@pytest.mark.parametrize(
    ("at", "day", "shift"),
    [
        ("2026-12-02T04:59:59Z", date(2026, 12, 1), "C"),  # 05:59 local: the night before
        ("2026-12-02T05:00:00Z", date(2026, 12, 2), "A"),
        ("2026-12-02T20:59:00Z", date(2026, 12, 2), "B"),
        ("2026-12-02T21:00:00Z", date(2026, 12, 2), "C"),  # 22:00 local
        ("2026-12-02T23:30:00Z", date(2026, 12, 2), "C"),  # 00:30 local on the 3rd
        ("2026-07-01T03:59:00Z", date(2026, 6, 30), "C"),  # summer: 05:59 local
        ("2026-07-01T04:00:00Z", date(2026, 7, 1), "A"),
    ],
)
def test_the_night_shift_counts_for_the_day_it_began(at: str, day: date, shift: str) -> None:
    assert THREE_SHIFTS.shift_at(datetime.fromisoformat(at)) == (day, shift)


def test_a_changed_rule_is_a_change_of_the_line() -> None:
    rule = {"pattern": "{line}-{seq}", "sequence": {"reset": "never"}}
    old = resolve_site({"edge_id": "e", "lines": [{"id": "l1"}, {"id": "l2"}]})
    new = resolve_site({"edge_id": "e", "lines": [{"id": "l1", "numbering": rule}, {"id": "l2"}]})
    changes = site_changes(old, new)
    assert changes.numbering == ["l1"] and changes.lines() == ["line l1: batch numbering changed"]
    assert site_changes(new, new).numbering == []


def test_a_rule_renders_its_fields() -> None:
    at = datetime(2026, 12, 2, 23, 30, tzinfo=UTC)
    assert THREE_SHIFTS.render("line-1", at, 7) == "line-1-261202-C007"
    assert THREE_SHIFTS.period(at) == "2026-12-02/C"


def test_a_plc_run_tag_needs_its_line_to_have_a_rule() -> None:
    plc = read_yaml(LIBRARY / "opcua-reactor-plc.yaml")
    plc["batch_source"] = {"tag": "batch_id", "numbered": True}
    rule = {"pattern": "{line}-{seq}", "sequence": {"reset": "never"}}
    lines = [{"id": "line-1", "devices": [{"profile": plc}]}, {"id": "line-2", "numbering": rule}]
    with pytest.raises(SiteDocumentError) as err:
        resolve_site({"edge_id": "e", "lines": lines})
    assert err.value.problems == [
        "lines[0].devices[0]: device reactor-plc-1's batch_source is numbered, but line line-1 "
        "has no numbering rule: add `numbering` to the line"
    ]
    lines[0]["numbering"] = rule
    assert resolve_site({"edge_id": "e", "lines": lines}).document.lines[0].numbering


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Zalgo" * 100, "Europe/../etc", "a\x00b"])
def test_a_time_zone_that_is_none_is_refused_with_the_fix(zone: str) -> None:
    """Even a name longer than a file name may be (zoneinfo looks names up as paths)."""
    with pytest.raises(ValueError, match="is not a time zone this edge knows"):
        BatchNumbering.model_validate({"pattern": "{line}-{seq}", "time_zone": zone})


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Zalgo" * 100, "a\x00b"])
def test_a_plant_zone_that_is_none_names_the_setting(zone: str) -> None:
    with pytest.raises(ValueError, match=r"TRACE_PLANT_TIMEZONE .* is not a time zone"):
        plant_zone_named(zone)
