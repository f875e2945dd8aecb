"""A new protocol is its folder (a profile model and a driver, here in this file) and one
registry entry: nothing in `device_profiles/schema.py`, `device_profiles/sites.py`,
`edge_agent/site.py` or `edge_agent/runtime.py` names it, yet its profiles are validated,
published in the JSON Schema, its devices are checked with their site (where they may sit,
the entry's own check of them together, the readings they make) and are built, polled,
bound and reported on like any other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import Field

from device_profiles.schema import ProfileError, json_schema, parse_profile
from device_profiles.sites import SiteDocumentError, resolve_site
from edge_agent.outbox import EVENTS, READINGS
from edge_agent.runtime import EdgeAgent, NoStationFor
from edge_agent.settings import EdgeSettings
from edge_agent.site import LineConfig, Site, SiteConfig, SiteError, capture_rate, load_site
from protocols.driver import Sample
from protocols.installed import REGISTRY
from protocols.profile import Name, ProfileBase, SpecLimits, Strict
from protocols.registry import ProtocolEntry


class PulseConnection(Strict):
    host: str = Field(min_length=1)


class PulseTag(Strict):
    name: Name
    unit: str | None = None
    spec: SpecLimits | None = None


class PulseCounterProfile(ProfileBase):
    protocol: Literal["pulse_counter"]
    connection: PulseConnection
    poll_interval_s: float = Field(default=0.25, ge=0.05)
    tags: list[PulseTag] = Field(min_length=1)


class PulseCounterDriver:
    def __init__(self, profile: PulseCounterProfile) -> None:
        self.name = profile.name
        self.profile = profile
        self.reads = 0
        self.dropped_pulses = 0

    async def open(self) -> None:
        pass

    async def read(self) -> list[Sample]:
        self.reads += 1
        return [Sample(t.name, float(self.reads), t.unit) for t in self.profile.tags]

    async def close(self) -> None:
        pass

    def bad_input(self) -> dict[str, int]:
        return {"dropped_pulses": self.dropped_pulses}


def one_meter_per_host(devices: Mapping[str, PulseCounterProfile]) -> list[str]:
    """The protocol's own check of a site's meters together: one meter per host."""
    hosts: dict[str, str] = {}
    problems = []
    for name, profile in devices.items():
        other = hosts.setdefault(profile.connection.host, name)
        if other != name:
            problems.append(f"{name}: host {profile.connection.host} is also {other}'s")
    return problems


PULSE = ProtocolEntry(
    "pulse_counter", PulseCounterProfile, PulseCounterDriver, site_check=one_meter_per_host
)
WITH_PULSE = REGISTRY.with_entries(PULSE)

PROFILE: dict[str, Any] = {
    "profile_version": 1,
    "name": "meter-1",
    "protocol": "pulse_counter",
    "connection": {"host": "10.0.0.9"},
    "tags": [{"name": "count", "unit": "pulses", "spec": {"high": 1000}}],
}


def test_its_profiles_are_validated_and_errors_read_like_any_other() -> None:
    profile = parse_profile(PROFILE, "meter.yaml", WITH_PULSE)
    assert isinstance(profile, PulseCounterProfile)
    assert profile.poll_interval_s == 0.25
    with pytest.raises(ProfileError) as err:
        parse_profile({**PROFILE, "connection": {"hots": "x"}}, "meter.yaml", WITH_PULSE)
    assert err.value.problems == [
        "connection.host: Field required",
        "connection.hots: unknown key: remove it or check its spelling",
    ]
    with pytest.raises(ProfileError, match=r"unknown protocol 'pulse_counter'"):
        parse_profile(PROFILE, "meter.yaml")  # an edge without the plugin refuses it


def test_its_profile_is_published_in_the_json_schema() -> None:
    mapping = json_schema(WITH_PULSE)["discriminator"]["mapping"]
    assert mapping["pulse_counter"] == "#/$defs/PulseCounterProfile"
    assert "pulse_counter" not in json_schema()["discriminator"]["mapping"]


def site_of(profile: ProfileBase) -> Site:
    return Site(SiteConfig(edge_id="e-1", lines=[LineConfig(id="line-1")]), {"line-1": [profile]})


async def test_the_edge_builds_polls_and_reports_its_devices(tmp_path: Path) -> None:
    profile = parse_profile(PROFILE, "meter.yaml", WITH_PULSE)
    agent = EdgeAgent(EdgeSettings(state_dir=tmp_path), site_of(profile), protocols=WITH_PULSE)
    try:
        task = agent.devices["meter-1"]
        assert isinstance(task.driver, PulseCounterDriver)
        assert (task.interval_s, task.subscribe, task.on_events) == (0.25, False, None)
        assert await task.poll_once() == 1
        agent.outbox.flush()
        assert agent.outbox.depth(READINGS) == 1
        assert agent.outbox.depth(EVENTS) == 1  # the tag's spec limits, announced
        task.driver.dropped_pulses = 3
        status = agent.status()["devices"]["meter-1"]
        assert (status["readings"], status["dropped_pulses"]) == (1, 3)
    finally:
        agent.close()


@dataclass
class WeighTicket:
    grams: int


class WeighScaleProfile(ProfileBase):
    protocol: Literal["weigh_scale"]
    connection: PulseConnection


class WeighScaleDriver:
    def __init__(self, profile: WeighScaleProfile) -> None:
        self.name = profile.name

    async def open(self) -> None:
        pass

    async def stream(self, deliver: Any) -> None:
        pass

    async def close(self) -> None:
        pass


def test_a_device_whose_items_no_station_takes_stops_the_edge_at_start(tmp_path: Path) -> None:
    scale = ProtocolEntry("weigh_scale", WeighScaleProfile, WeighScaleDriver, events=WeighTicket)
    registry = REGISTRY.with_entries(scale)
    profile = parse_profile(
        {"profile_version": 1, "name": "scale-1", "protocol": "weigh_scale",
         "connection": {"host": "h"}},
        "scale.yaml",
        registry,
    )  # fmt: skip
    with pytest.raises(NoStationFor, match=r"scale-1: protocol weigh_scale reports WeighTicket"):
        EdgeAgent(EdgeSettings(state_dir=tmp_path), site_of(profile), protocols=registry)


def test_its_devices_are_checked_with_their_site(tmp_path: Path) -> None:
    (tmp_path / "meter.yaml").write_text(yaml.safe_dump(PROFILE))
    meter = {"profile": "meter.yaml"}

    def site_file(body: dict[str, Any]) -> Path:
        path = tmp_path / "site.yaml"
        path.write_text(yaml.safe_dump({"edge_id": "e-1", **body}))
        return path

    loaded = load_site(site_file({"lines": [{"id": "line-1", "devices": [meter]}]}), WITH_PULSE)
    (profile,) = loaded.devices["line-1"]
    assert isinstance(profile, PulseCounterProfile)
    # Its readings size the outbox: one tag every 0.25 s, from what the profile says alone.
    assert capture_rate([profile, profile]) == 8.0
    with pytest.raises(SiteError, match=r"unknown protocol 'pulse_counter'"):
        load_site(site_file({"lines": [{"id": "line-1", "devices": [meter]}]}))
    # It makes readings, not events: no place at a warehouse station.
    at_warehouse = {"warehouse": [{"id": "wh", "step": "move", "devices": [meter]}]}
    with pytest.raises(SiteError) as err:
        load_site(site_file(at_warehouse), WITH_PULSE)
    assert err.value.problems == [
        f"{tmp_path / 'site.yaml'}: warehouse[0].devices[0]: a warehouse station takes scanners"
        " and RFID readers (rfid_serial, scanner_serial, scanner_wedge), not pulse_counter: put"
        " it at a line"
    ]
    # The entry's own check sees the site's meters together, on a line PC and when pushed.
    renamed = {**PROFILE, "name": "meter-2"}  # on the same host
    (tmp_path / "meter-2.yaml").write_text(yaml.safe_dump(renamed))
    two = {"lines": [{"id": "line-1", "devices": [meter, {"profile": "meter-2.yaml"}]}]}
    with pytest.raises(SiteError) as err:
        load_site(site_file(two), WITH_PULSE)
    assert err.value.problems == [
        f"{tmp_path / 'site.yaml'}: meter-2: host 10.0.0.9 is also meter-1's"
    ]
    devices: list[dict[str, Any]] = [{"profile": PROFILE}, {"profile": renamed}]
    pushed: dict[str, Any] = {"edge_id": "e-1", "lines": [{"id": "line-1", "devices": devices}]}
    with pytest.raises(SiteDocumentError) as pushed_err:
        resolve_site(pushed, "pushed", registry=WITH_PULSE)
    assert pushed_err.value.problems == ["meter-2: host 10.0.0.9 is also meter-1's"]
    devices[1]["connection"] = {"host": "10.0.0.10"}
    assert resolve_site(pushed, "pushed", registry=WITH_PULSE).edge_id == "e-1"
