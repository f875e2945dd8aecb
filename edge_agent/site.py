"""The site configuration of one line PC: its edge id, its lines, and their devices.

All of it, every device profile included, is validated before any device is opened, and
every problem is reported at once with the file and the path where it sits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from device_profiles.numbering import BatchNumbering, numbering_problems, run_tag_problems
from device_profiles.schema import (
    DeviceProfile,
    ProfileError,
    UnreadableYaml,
    load_profile,
    parse_profile,
    read_yaml,
)
from device_profiles.sites import DockParty, WarehouseWork, check_station_ids, warehouse_problem
from protocols.installed import REGISTRY
from protocols.mqtt.contract import MAX_PARTIES
from protocols.profile import readings_per_s
from protocols.registry import Registry
from protocols.strict import Strict

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]


class DeviceRef(Strict):
    profile: Path  # relative to the site file
    # Per-installation values over the profile's own: another host, port or unit id.
    connection: dict[str, Any] = Field(default_factory=dict)


class LineConfig(Strict):
    id: Name
    devices: list[DeviceRef] = Field(default_factory=list)
    # The ids of batches started without one (device_profiles/numbering.py).
    numbering: BatchNumbering | None = None


class DockConfig(Strict):
    """A dock door: its RFID gate and scanners; bound to a purchase order or a shipment;
    the trading parties its events name where the document does not (DockParty)."""

    id: Name
    devices: list[DeviceRef] = Field(default_factory=list)
    parties: list[DockParty] = Field(default_factory=list, max_length=MAX_PARTIES)


class WarehouseConfig(WarehouseWork):
    """A warehouse station (a handheld or fixed scanner, an RFID reader): what it does is
    WarehouseWork's."""

    id: Name
    devices: list[DeviceRef] = Field(default_factory=list)


class SiteConfig(Strict):
    edge_id: Name
    lines: list[LineConfig] = Field(default_factory=list)
    docks: list[DockConfig] = Field(default_factory=list)
    warehouse: list[WarehouseConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _numbering(self) -> SiteConfig:
        problems = numbering_problems([(line.id, line.numbering) for line in self.lines])
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _stations(self) -> SiteConfig:
        check_station_ids(
            [s.id for s in self.lines] + [d.id for d in self.docks] + [w.id for w in self.warehouse]
        )
        return self


class SiteError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("site configuration is invalid:\n  " + "\n  ".join(problems))


class Site:
    """A validated site: the config and, per station (line or dock), its devices' profiles."""

    def __init__(self, config: SiteConfig, devices: dict[str, list[DeviceProfile]]) -> None:
        self.config = config
        self.edge_id = config.edge_id
        self.devices = devices  # station id -> profiles

    @property
    def line_ids(self) -> list[str]:
        return [line.id for line in self.config.lines]

    @property
    def numbering(self) -> dict[str, BatchNumbering]:
        """The lines that number batches started without an id, and their rules."""
        return {line.id: line.numbering for line in self.config.lines if line.numbering}

    @property
    def dock_ids(self) -> list[str]:
        return [dock.id for dock in self.config.docks]

    @property
    def dock_parties(self) -> dict[str, list[DockParty]]:
        return {dock.id: list(dock.parties) for dock in self.config.docks if dock.parties}

    @property
    def warehouse(self) -> dict[str, WarehouseWork]:
        """Warehouse stations by id, with what each does."""
        return {
            w.id: WarehouseWork(step=w.step, place=w.place, to=w.to) for w in self.config.warehouse
        }


def load_site(path: Path, registry: Registry = REGISTRY) -> Site:
    """The site of a site file, its profiles read from theirs (`registry`: the protocols
    installed); SiteError lists every problem at once."""
    try:
        config = SiteConfig.model_validate(read_yaml(path))
    except UnreadableYaml as err:
        raise SiteError([f"{path}: {err}"]) from err
    except ValidationError as err:
        raise SiteError(
            [f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        ) from err
    problems: list[str] = []
    devices: dict[str, list[DeviceProfile]] = {}
    names: dict[str, str] = {}
    stations: list[tuple[str, int, LineConfig | DockConfig | WarehouseConfig]]
    stations = [("lines", i, s) for i, s in enumerate(config.lines)]
    stations += [("docks", i, s) for i, s in enumerate(config.docks)]
    stations += [("warehouse", i, s) for i, s in enumerate(config.warehouse)]
    for kind, li, line in stations:
        devices[line.id] = []
        for di, ref in enumerate(line.devices):
            where = f"{path}: {kind}[{li}].devices[{di}]"
            profile_path = (path.parent / ref.profile).resolve()
            try:
                profile = load_profile(profile_path, registry)
                if ref.connection:
                    merged = profile.model_dump(mode="json")
                    merged["connection"] = {**merged["connection"], **ref.connection}
                    overridden = f"{profile_path} with {where}.connection"
                    profile = parse_profile(merged, overridden, registry)
            except ProfileError as err:
                problems.extend(f"{where}: {err.source}: {p}" for p in err.problems)
                continue
            if kind == "warehouse" and (wrong := warehouse_problem(profile, registry)):
                problems.append(f"{where}: {wrong}")
                continue
            if profile.name in names:
                problems.append(
                    f"{where}: device name {profile.name!r} is also used in {names[profile.name]}: "
                    "give each device on an edge its own profile name"
                )
            names[profile.name] = where
            devices[line.id].append(profile)
    # Each protocol's check of its devices together (devices on one RS-485 port).
    named = {p.name: p for ps in devices.values() for p in ps}
    problems += [f"{path}: {problem}" for problem in registry.site_problems(named)]
    problems += run_tag_problems(
        {line.id: line.numbering for line in config.lines},
        [
            (names[p.name], p.name, station)
            for station, ps in devices.items()
            for p in ps
            if p.batch_source is not None and p.batch_source.numbered
        ],
    )
    if problems:
        raise SiteError(problems)
    return Site(config, devices)


def capture_rate(profiles: list[DeviceProfile]) -> float:
    """Readings per second the profiles ask for at most (every tag at its full rate; each
    profile's own say, protocols.profile.readings_per_s). RFID readers and scanners make
    events, a few a minute, not readings: not counted."""
    return sum((readings_per_s(profile) for profile in profiles), 0.0)
