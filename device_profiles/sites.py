"""A site configuration as one self-contained document: what the collector's registry keeps in
versions and pushes to an edge, and what the edge validates whole before it applies it.

A site file on a line PC names its device profiles by path (`edge_agent/site.py`); a pushed
site cannot, so the document carries each profile itself, beside the per-installation
`connection` values that override the profile's own:

    edge_id: line-pc-1
    lines:
      - id: line-1
        devices:
          - profile: {profile_version: 1, protocol: modbus_tcp, name: tpc-1, ...}
            connection: {host: 10.0.0.7}
    docks: []

Both sides import this module (it imports only the profile schema): the collector refuses a
version the edge would refuse, with the same words, and both compute the same changes.
The canonical form (sorted keys, no blanks, UTF-8) is what is hashed, stored and pushed, so a
hash names one content whatever the order of the technician's keys.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from device_profiles.numbering import BatchNumbering, numbering_problems, run_tag_problems
from device_profiles.schema import (
    DeviceProfile,
    ProfileError,
    UnreadableYaml,
    parse_profile,
    read_yaml,
)
from protocols.installed import REGISTRY
from protocols.mqtt.contract import (
    MAX_PARTIES,
    BizStep,
    Gln,
    GlnExtension,
    PartySide,
    PartyType,
    TradingParty,
)
from protocols.profile import Name, ProfileBase, RefersToFiles, Tagged
from protocols.registry import Registry
from protocols.strict import Strict

# A pushed document larger than this is refused unread: a site of a few hundred devices
# with their profiles is well under it.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DEVICES = 500


def warehouse_problem(profile: ProfileBase, registry: Registry) -> str | None:
    """Why a device cannot be at a warehouse station, if it cannot: a warehouse station's
    events come from scans and tag reads (edge_agent/gates.py WarehouseReaderStation), so
    it takes only devices whose protocol reports events, not readings."""
    if registry.entry_of(profile).events is not None:
        return None
    return (
        "a warehouse station takes scanners and RFID readers "
        f"({', '.join(registry.event_protocols())}), not {profile.protocol}: put it at a line"
    )


class BundledDevice(Strict):
    profile: dict[str, Any]  # the profile document itself (device_profiles/schema.py)
    # Per-installation values over the profile's own: another host, port, unit id or serial port.
    connection: dict[str, Any] = Field(default_factory=dict)


class BundledStation(Strict):
    id: Name
    devices: list[BundledDevice] = Field(default_factory=list, max_length=MAX_DEVICES)
    # A line's rule for the ids of batches started without one (device_profiles/numbering.py).
    numbering: BatchNumbering | None = None


class DockParty(Strict):
    """A trading party a dock door names in its events (EPCIS sourceList / destinationList,
    CBV 2.0 section 8.5) where the document or label scanned there names none of that kind.
    `side`: `ours` is who we are at this door (the source of what it ships, the destination
    of what it receives), `partner` the other end (a door that serves one customer or one
    supplier), `source` / `destination` the same whichever way goods pass."""

    side: Literal["ours", "partner", "source", "destination"]
    type: PartyType
    gln: Gln
    extension: GlnExtension | None = None  # a place within the location (AI 254)

    @model_validator(mode="after")
    def _extension_of_a_place(self) -> DockParty:
        if self.extension is not None and self.type != "location":
            raise ValueError(
                f"an extension names a place within a location; a party ({self.type}) is named by "
                "its GLN alone: drop the extension or make the type location"
            )
        return self

    def at(self, biz_step: BizStep) -> TradingParty:
        """The party of an event with this bizStep: goods leave us when shipping."""
        ours: PartySide = "source" if biz_step == "shipping" else "destination"
        theirs: PartySide = "destination" if ours == "source" else "source"
        side = ours if self.side == "ours" else theirs if self.side == "partner" else self.side
        return TradingParty(side=side, type=self.type, gln=self.gln, extension=self.extension)


class BundledDock(BundledStation):
    # Who the door's events name when its document does not (EPCIS trading parties).
    parties: list[DockParty] = Field(default_factory=list, max_length=MAX_PARTIES)


WarehouseStep = Literal["put_away", "move", "pick", "count"]


class WarehouseWork(Strict):
    """What a warehouse station does with the goods scanned there (edge_agent/stations.py):
    put them away or move them to its place (CBV `storing`), pick them from its place
    (`picking`) to `to` (a staging lane; none: picked, at no place yet), or count them at
    its place (`cycle_counting`). Its place is the place label scanned last there, or
    `place` for a fixed station (a scanner at one bin or lane) until a label is scanned."""

    step: WarehouseStep
    place: Name | None = None
    to: Name | None = None


class BundledWarehouse(BundledStation, WarehouseWork):
    pass


class SiteDocument(Strict):
    edge_id: Name
    lines: list[BundledStation] = Field(default_factory=list, max_length=MAX_DEVICES)
    docks: list[BundledDock] = Field(default_factory=list, max_length=MAX_DEVICES)
    warehouse: list[BundledWarehouse] = Field(default_factory=list, max_length=MAX_DEVICES)

    @model_validator(mode="after")
    def _numbering(self) -> SiteDocument:
        problems = [
            f"docks[{i}].numbering: a dock starts no batches: remove it"
            for i, dock in enumerate(self.docks)
            if dock.numbering is not None
        ]
        problems += [
            f"warehouse[{i}].numbering: a warehouse station starts no batches: remove it"
            for i, station in enumerate(self.warehouse)
            if station.numbering is not None
        ]
        problems += numbering_problems([(s.id, s.numbering) for s in self.lines])
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _stations(self) -> SiteDocument:
        check_station_ids(
            [s.id for s in self.lines] + [d.id for d in self.docks] + [w.id for w in self.warehouse]
        )
        return self


def check_station_ids(ids: list[str]) -> None:
    """The rule for a site's stations, a site file's and a pushed document's alike: at least
    one, and lines, docks and warehouse stations share one name space (readings and events
    name the station)."""
    if not ids:
        raise ValueError("a site needs at least one line, dock or warehouse station")
    for station in ids:
        if ids.count(station) > 1:
            raise ValueError(
                f"station id {station!r} is used twice: lines, docks and warehouse stations "
                "need unique ids"
            )


class SiteDocumentError(ValueError):
    """A site document that cannot run; `problems` lists `where: what and the fix` lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


@dataclass(frozen=True)
class PlacedDevice:
    station: str
    kind: Literal["line", "dock", "warehouse"]
    profile: DeviceProfile  # the connection override merged in


@dataclass(frozen=True)
class ResolvedSite:
    """A validated site document: its stations and every device with its merged profile."""

    document: SiteDocument
    devices: dict[str, PlacedDevice]  # by device (profile) name, in document order

    @property
    def edge_id(self) -> str:
        return self.document.edge_id

    def stations(self) -> dict[str, list[DeviceProfile]]:
        out: dict[str, list[DeviceProfile]] = {s.id: [] for s in self.document.lines}
        out |= {s.id: [] for s in self.document.docks}
        out |= {s.id: [] for s in self.document.warehouse}
        for placed in self.devices.values():
            out[placed.station].append(placed.profile)
        return out


def canonical_json(data: Any) -> str:
    """The one text of a content: sorted keys, no blanks, UTF-8, no NaN or infinity."""
    try:
        return json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (ValueError, TypeError, RecursionError) as err:
        raise SiteDocumentError("<content>", [f"not storable as JSON: {err}"]) from err


def content_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def canonical_yaml(data: Any) -> str:
    """The readable form for diffs: keys sorted, one value per line."""
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)


def _errors(source: str, err: ValidationError) -> SiteDocumentError:
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(site)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key: remove it or check its spelling"
        problems.append(f"{where}: {msg}")
    return SiteDocumentError(source, problems)


def resolve_site(
    data: object,
    source: str = "<site>",
    files_at: Path | None = None,
    registry: Registry = REGISTRY,
) -> ResolvedSite:
    """The site `data` describes, validated whole (every profile, every override, unique
    device names, each protocol's site check) before anything runs; SiteDocumentError lists
    every problem at once. `files_at`: where profiles' relative file names (certificates)
    resolve on this host; `registry`: the protocols installed."""
    try:
        document = SiteDocument.model_validate(data)
    except ValidationError as err:
        raise _errors(source, err) from err
    problems: list[str] = []
    devices: dict[str, PlacedDevice] = {}
    stations: list[tuple[str, int, BundledStation, Literal["line", "dock", "warehouse"]]]
    stations = [("lines", i, s, "line") for i, s in enumerate(document.lines)]
    stations += [("docks", i, s, "dock") for i, s in enumerate(document.docks)]
    stations += [("warehouse", i, s, "warehouse") for i, s in enumerate(document.warehouse)]
    where_of: dict[str, str] = {}
    for kind, si, station, station_kind in stations:
        for di, ref in enumerate(station.devices):
            where = f"{kind}[{si}].devices[{di}]"
            try:
                profile = parse_profile(ref.profile, f"{where}.profile", registry)
                if ref.connection:
                    merged = profile.model_dump(mode="json")
                    merged["connection"] = {**merged["connection"], **ref.connection}
                    overridden = f"{where}.profile with {where}.connection"
                    profile = parse_profile(merged, overridden, registry)
            except ProfileError as err:
                problems.extend(f"{err.source}: {p}" for p in err.problems)
                continue
            if files_at is not None and isinstance(profile, RefersToFiles):
                profile = profile.files_beside(files_at)
            if station_kind == "warehouse" and (wrong := warehouse_problem(profile, registry)):
                problems.append(f"{where}: {wrong}")
                continue
            if profile.name in devices:
                problems.append(
                    f"{where}: device name {profile.name!r} is also used in "
                    f"{where_of[profile.name]}: give each device on an edge its own name"
                )
                continue
            where_of[profile.name] = where
            devices[profile.name] = PlacedDevice(station.id, station_kind, profile)
    problems += registry.site_problems({name: d.profile for name, d in devices.items()})
    problems += run_tag_problems(
        {s.id: s.numbering for s in document.lines},
        [
            (where_of[name], name, placed.station)
            for name, placed in devices.items()
            if placed.profile.batch_source is not None and placed.profile.batch_source.numbered
        ],
    )
    if problems:
        raise SiteDocumentError(source, problems)
    return ResolvedSite(document, devices)


def bundle_site_file(path: Path) -> dict[str, Any]:
    """The site document of a site file on disk: its profile files read in (as written,
    not resolved), its overrides beside them. SiteDocumentError names the file."""
    try:
        raw = read_yaml(path)
    except UnreadableYaml as err:
        raise SiteDocumentError(str(path), [str(err)]) from err
    if not isinstance(raw, dict):
        raise SiteDocumentError(str(path), ["not a site file: expected edge_id, lines, docks"])
    problems: list[str] = []
    out: dict[str, Any] = dict(raw)
    for kind in ("lines", "docks", "warehouse"):
        stations = raw.get(kind)
        if not isinstance(stations, list):
            continue
        out[kind] = []
        for si, station in enumerate(stations):
            if not isinstance(station, dict) or not isinstance(station.get("devices"), list):
                out[kind].append(station)
                continue
            devices = []
            for di, ref in enumerate(station["devices"]):
                if not isinstance(ref, dict) or not isinstance(ref.get("profile"), str):
                    devices.append(ref)
                    continue
                profile_path = (path.parent / ref["profile"]).resolve()
                try:
                    profile = read_yaml(profile_path)
                except UnreadableYaml as err:
                    problems.append(f"{kind}[{si}].devices[{di}].profile: {profile_path}: {err}")
                    continue
                devices.append({**ref, "profile": profile})
            out[kind].append({**station, "devices": devices})
    if problems:
        raise SiteDocumentError(str(path), problems)
    return out


# ---- Changes between two versions ------------------------------------------------------


@dataclass
class SiteChanges:
    """What applying `new` over `old` does: devices by name; stations by id."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[str]] = field(default_factory=dict)  # device -> what changed
    # Devices only moved to another station, as (from, to): they keep their name, so their
    # history, and keep capturing (nothing of the device itself changed).
    moved: dict[str, tuple[str, str]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    stations_added: list[str] = field(default_factory=list)
    stations_removed: list[str] = field(default_factory=list)
    numbering: list[str] = field(default_factory=list)  # lines whose numbering rule changed

    @property
    def restarted(self) -> list[str]:
        """Devices stopped (removed or changed) by the apply."""
        return self.removed + list(self.changed)

    def lines(self) -> list[str]:
        out = [f"station {s}: added" for s in self.stations_added]
        out += [f"station {s}: removed" for s in self.stations_removed]
        out += [f"line {s}: batch numbering changed" for s in self.numbering]
        out += [f"device {d}: added" for d in self.added]
        out += [f"device {d}: removed" for d in self.removed]
        out += [f"device {d}: {', '.join(what)}" for d, what in self.changed.items()]
        out += [f"device {d}: moved from {a} to {b}" for d, (a, b) in self.moved.items()]
        return out or ["no change"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "moved": {d: list(ab) for d, ab in self.moved.items()},
            "unchanged": self.unchanged,
            "stations_added": self.stations_added,
            "stations_removed": self.stations_removed,
            "numbering": self.numbering,
        }


def _tags(profile: DeviceProfile) -> dict[str, Any]:
    if not isinstance(profile, Tagged):
        return {}
    return {t.name: t for t in profile.tags}


def profile_changes(old: DeviceProfile, new: DeviceProfile) -> list[str]:
    """What differs between two profiles of one device, in a technician's words."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    out = []
    if a.get("protocol") != b.get("protocol"):
        out.append(f"protocol {a.get('protocol')} -> {b.get('protocol')}")
    old_tags, new_tags = _tags(old), _tags(new)
    out += [f"tag {t} added" for t in new_tags if t not in old_tags]
    out += [f"tag {t} removed" for t in old_tags if t not in new_tags]
    out += [
        f"tag {t} changed"
        for t in new_tags
        if t in old_tags and new_tags[t].model_dump() != old_tags[t].model_dump()
    ]
    for key in sorted(set(a) | set(b)):
        if key in ("tags", "protocol", "name"):
            continue
        if a.get(key) != b.get(key):
            out.append(f"{key} changed")
    return out


def site_changes(old: ResolvedSite | None, new: ResolvedSite) -> SiteChanges:
    """The dry run of applying `new` where `old` runs (None: nothing runs yet)."""
    changes = SiteChanges()
    old_devices = old.devices if old is not None else {}
    old_stations = set(old.stations()) if old is not None else set()
    new_stations = set(new.stations())
    changes.stations_added = sorted(new_stations - old_stations)
    changes.stations_removed = sorted(old_stations - new_stations)
    for name, placed in new.devices.items():
        before = old_devices.get(name)
        if before is None:
            changes.added.append(name)
            continue
        what = []
        moved = before.station != placed.station
        if before.profile.model_dump(mode="json") != placed.profile.model_dump(mode="json"):
            what += profile_changes(before.profile, placed.profile) or ["profile changed"]
        if what:
            # Changed and moved: it restarts at its new station with its new profile.
            if moved:
                what.insert(0, f"moved from {before.station} to {placed.station}")
            changes.changed[name] = what
        elif moved:
            changes.moved[name] = (before.station, placed.station)
        else:
            changes.unchanged.append(name)
    changes.removed = [name for name in old_devices if name not in new.devices]
    old_rules = {s.id: s.numbering for s in old.document.lines} if old is not None else {}
    changes.numbering = [s.id for s in new.document.lines if s.numbering != old_rules.get(s.id)]
    return changes


def unified_diff(old: Any, new: Any, old_label: str, new_label: str) -> str:
    """A unified text diff of two contents in their canonical YAML."""
    return "".join(
        difflib.unified_diff(
            canonical_yaml(old).splitlines(keepends=True),
            canonical_yaml(new).splitlines(keepends=True),
            fromfile=old_label,
            tofile=new_label,
        )
    )
