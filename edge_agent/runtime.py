"""The edge agent assembled: device tasks, batch binding, outbox and publisher, supervised
as named tasks in one task group (one failing task stops the agent loudly, never silently)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from typing import Any

import uvicorn
from pydantic import ValidationError

from device_profiles.schema import DeviceProfile
from device_profiles.sites import ResolvedSite, SiteChanges
from edge_agent import holds
from edge_agent.batch_context import BatchContext
from edge_agent.batch_numbers import BatchNumbers
from edge_agent.binding import BatchTag, Binder
from edge_agent.capture import DeviceTask
from edge_agent.control import ControlAccess, create_control_app
from edge_agent.control_token import load_or_create_token
from edge_agent.gates import GateStation, LineReaderStation, WarehouseReaderStation
from edge_agent.holds import HeldLots
from edge_agent.outbox import EVENTS, READING_BYTES, Outbox
from edge_agent.probes import EdgeProbes
from edge_agent.publisher import Publisher, Subscription
from edge_agent.reconfigure import (
    ApplyRefused,
    SiteConfigurator,
    last_applied,
    running_site,
    site_of,
)
from edge_agent.records import UNNUMBERED
from edge_agent.scans import ScanStation
from edge_agent.settings import EdgeSettings
from edge_agent.site import Site, capture_rate
from edge_agent.stations import Stations
from edge_agent.store import EdgeStore
from protocols.driver import CountsBadInput, Diagnosable
from protocols.installed import REGISTRY
from protocols.mqtt import topics
from protocols.mqtt.contract import (
    MAX_STATUS_ITEMS,
    DeviceState,
    EdgeStatus,
    LineState,
    TagSpec,
    TagSpecs,
    TagValue,
)
from protocols.profile import Polled, Subscribable, Tagged
from protocols.registry import ProtocolEntry, Registry
from protocols.rfid.profile import RfidReader
from protocols.rfid.records import TagRead
from protocols.scanner.client import Scan
from protocols.scanner.profile import ScannerProfileBase

log = logging.getLogger(__name__)

MIN_OUTBOX_BYTES = 16 << 20


def outbox_bytes(settings: EdgeSettings, site: Site) -> int:
    """The outbox bound: TRACE_EDGE_OUTBOX_MAX_BYTES when set, else TRACE_EDGE_OUTBOX_HOURS
    of outage at the site's capture rate."""
    if settings.outbox_max_bytes is not None:
        return settings.outbox_max_bytes
    profiles = [p for profiles in site.devices.values() for p in profiles]
    rate = capture_rate(profiles)
    return max(MIN_OUTBOX_BYTES, int(rate * 3600 * settings.outbox_hours * READING_BYTES))


class EdgeIdentityMismatch(ValueError):
    """The broker identity this edge connects with is not its edge id: the broker's ACL
    would refuse every message it publishes."""


class NoStationFor(ValueError):
    """A device reports items that no station of the edge takes."""


class EdgeAgent:
    def __init__(self, settings: EdgeSettings, site: Site, protocols: Registry = REGISTRY) -> None:
        username = settings.mqtt.username
        if username is not None and username != site.edge_id:
            raise EdgeIdentityMismatch(
                f"the site's edge_id is {site.edge_id!r} but TRACE_MQTT_USERNAME is "
                f"{username!r}: the broker lets an edge publish only under its own name; "
                f"set edge_id: {username} in the site file or use the identity issued with "
                f"`tracectl edge add {site.edge_id}`"
            )
        self.settings = settings
        self.site = site
        self.protocols = protocols
        self.wake = asyncio.Event()
        # One file for the outbox, the active batches and the stations (its name from the
        # time it held the outbox alone: an edge keeps its state across the upgrade).
        self.store = EdgeStore(
            settings.state_dir / "outbox.db", commit_interval_s=settings.outbox_commit_interval_s
        )
        # A site version pushed and applied before runs again, ahead of the site file: the
        # collector's configuration holds also across a restart without a broker.
        files_at = settings.site.parent
        stored = last_applied(self.store, site.edge_id, files_at)
        if stored is not None:
            site = site_of(stored[2])
            self.site = site
        self.outbox = Outbox(
            self.store, max_bytes=outbox_bytes(settings, site), policy=settings.outbox_policy
        )
        self.outbox.on_append = self.wake.set
        self.context = BatchContext(self.store, site.line_ids)
        batch_tags = {
            p.name: BatchTag.of(p.batch_source)
            for profiles in site.devices.values()
            for p in profiles
            if p.batch_source is not None
        }
        self.binder = Binder(
            self.context, self.outbox, batch_tags, BatchNumbers(self.store, site.numbering)
        )
        self.held = HeldLots(self.store)
        self.stations = Stations(
            self.binder,
            site.line_ids,
            site.dock_ids,
            self.held,
            site.dock_parties,
            site.warehouse,
        )
        self.gates: list[GateStation] = []
        self.devices: dict[str, DeviceTask] = {
            profile.name: self._device_task(station, profile)
            for station, profiles in site.devices.items()
            for profile in profiles
        }
        self._announce_specs()
        self._group: asyncio.TaskGroup | None = None
        self._poll = True
        self._runs: dict[str, asyncio.Task[None]] = {}  # device name -> its running task
        self.configurator = SiteConfigurator(
            site.edge_id,
            self.store,
            stored[2] if stored is not None else running_site(site),
            self.apply_site,
            files_at,
            version=stored[0] if stored is not None else None,
            sha256=stored[1] if stored is not None else None,
        )
        self.publisher: Publisher = Publisher(
            site.edge_id,
            self.outbox,
            settings.mqtt,
            self.wake,
            max_records=settings.publish_max_records,
            linger_s=settings.publish_linger_s,
            ack_timeout_s=settings.ack_timeout_s,
            status=self.edge_status,
            status_interval_s=settings.status_interval_s,
            subscriptions=[
                holds.subscription(self.held),
                Subscription(topics.config_site(site.edge_id), self._offer_site),
                Subscription(topics.probe_request(site.edge_id), self._offer_probe),
            ],
        )
        self.probes = EdgeProbes(
            site.edge_id, self._running_profiles, self.publisher.reply, protocols, files_at
        )

    def _running_profiles(self) -> dict[str, DeviceProfile]:
        return {p.name: p for profiles in self.site.devices.values() for p in profiles}

    def _offer_probe(self, payload: object) -> None:
        self.probes.offer(payload)

    def _offer_site(self, payload: object) -> None:
        """A message of this edge's config topic, as bytes, to the site configurator."""
        self.configurator.offer(payload if isinstance(payload, bytes) else str(payload).encode())

    def _announce_specs(self, devices: set[str] | None = None) -> None:
        """Tell the collector the spec limits of every tag (of `devices`: those a new site
        version added or changed), so it can flag excursions."""
        specs = [
            TagSpec(
                device=p.name,
                tag=t.name,
                unit=t.unit,
                low=t.spec.low if t.spec else None,
                high=t.spec.high if t.spec else None,
            )
            for profiles in self.site.devices.values()
            for p in profiles
            for t in (p.tags if isinstance(p, Tagged) else [])
            if t.spec is not None and (devices is None or p.name in devices)
        ]
        if specs:
            self.outbox.append(
                EVENTS, TagSpecs(seq=UNNUMBERED, time=datetime.now(UTC), specs=specs)
            )

    def _device_task(self, station: str, profile: DeviceProfile) -> DeviceTask:
        """A device as its protocol's registry entry builds it."""
        entry = self.protocols.entry_of(profile)
        return DeviceTask(
            station,
            entry.driver(profile),
            profile.poll_interval_s if isinstance(profile, Polled) else 1.0,
            self.binder,
            subscribe=isinstance(profile, Subscribable) and profile.sampling == "subscription",
            on_events=self._station_input(station, profile, entry),
        )

    def _station_input(
        self, station: str, profile: DeviceProfile, entry: ProtocolEntry[Any]
    ) -> Callable[[list[Any]], None] | None:
        """Where a streaming device's items go, by the item type its protocol declares: the
        station's handler (None: the device reads samples, bound as readings)."""
        if entry.events is None:
            return None
        if entry.events is Scan and isinstance(profile, ScannerProfileBase):
            return ScanStation(self.stations, station, station in self.site.dock_ids, profile)
        if entry.events is TagRead and isinstance(profile, RfidReader):
            reader = (
                GateStation(self.stations, station, profile)
                if station in self.site.dock_ids
                else WarehouseReaderStation(self.stations, station, profile)
                if station in self.site.warehouse
                else LineReaderStation(self.stations, station, profile)
            )
            self.gates.append(reader)
            return reader
        raise NoStationFor(
            f"device {profile.name}: protocol {entry.name} reports "
            f"{entry.events.__name__} items, which no station of this edge takes"
        )

    def edge_status(self) -> EdgeStatus:
        stats = self.outbox.stats()
        ages = [s.oldest_age_s for s in stats.streams.values() if s.oldest_age_s is not None]
        alarms = list(stats.alarms) + self.publisher.alarms() + self.held.alarms()
        alarms += [
            f"device {name} offline since {t.health.offline_since.isoformat()}: "
            f"{t.health.last_error}"
            for name, t in self.devices.items()
            if t.health.offline_since is not None
        ]
        lines, devices = self._lines_and_devices(alarms)
        return EdgeStatus(
            edge_id=self.site.edge_id,
            state="online",
            time=datetime.now(UTC),
            version=version("lot-trace"),
            outbox_depth=stats.depth,
            outbox_oldest_age_s=max(ages) if ages else None,
            outbox_dropped=stats.dropped,
            quarantined=stats.quarantined,
            # The contract bounds a status (1,000 alarms of 2,000 characters): a device's
            # error text is the device's, not ours to trust in length.
            alarms=[alarm[:2000] for alarm in alarms[:1000]],
            last_ack_at=self.publisher.health.last_ack_at,
            lines=lines,
            devices=devices,
            site_config=self.configurator.state(),
        )

    def _lines_and_devices(self, alarms: list[str]) -> tuple[list[LineState], list[DeviceState]]:
        """Each line's active batch and each device's state for the status. What the
        contract refuses (a device name it cannot carry) is left out with an alarm: the
        status itself must always be publishable."""
        lines = []
        for line in self.site.line_ids[:MAX_STATUS_ITEMS]:
            active = self.context.active(line)
            try:
                lines.append(
                    LineState(
                        line=line,
                        batch=active.batch_id if active else None,
                        batch_started_at=active.started_at if active else None,
                    )
                )
            except ValidationError as err:
                alarms.append(f"line {line}: not in the status: {err.errors()[0]['msg']}")
        devices = []
        for name, task in list(self.devices.items())[:MAX_STATUS_ITEMS]:
            health = task.health
            error = (health.last_error or "").replace("\x00", "")[:2000] or None
            try:
                devices.append(
                    DeviceState(
                        device=name,
                        station=task.line_id,
                        connected=health.connected,
                        last_read_at=health.last_read_at,
                        offline_since=health.offline_since,
                        failures=health.failures,
                        last_error=error,
                        values=_last_values(task),
                    )
                )
            except ValidationError as err:
                alarms.append(f"device {name}: not in the status: {err.errors()[0]['msg']}")
        return lines, devices

    def _device_status(self, task: DeviceTask) -> dict[str, Any]:
        """Health, plus what the driver counts of bad input (garbage frames, bad scans) and
        what the contract refused of its values."""
        out = asdict(task.health)
        refusals, name = self.binder.refusals, task.driver.name
        if name in refusals.count:
            out["refused"] = refusals.count[name]
            out["last_refused"] = refusals.last[name]
        driver = task.driver
        if isinstance(driver, Diagnosable):
            out["line"] = driver.diagnostics()
        if isinstance(driver, CountsBadInput):
            out |= driver.bad_input()
        if isinstance(task.on_events, ScanStation):
            out["scans"] = asdict(task.on_events.counters)
        if isinstance(task.on_events, GateStation):
            out["gate"] = asdict(task.on_events.gate.counters)
            out["gate"]["refused"] = task.on_events.refused
            out["gate"]["last_refused"] = task.on_events.last_refused
        return out

    def status(self) -> dict[str, Any]:
        stats = self.outbox.stats()
        return {
            "edge_id": self.site.edge_id,
            "lines": {
                line: (asdict(b) if (b := self.context.active(line)) else None)
                for line in self.site.line_ids
            },
            "devices": {name: self._device_status(task) for name, task in self.devices.items()},
            "publisher": asdict(self.publisher.health),
            "outbox": {
                "epoch": stats.epoch,
                "bytes": stats.bytes,
                "max_bytes": stats.max_bytes,
                "policy": self.outbox.policy,
                "streams": {name: asdict(s) for name, s in stats.streams.items()},
                "alarms": stats.alarms,
                "quarantined": stats.quarantined,
                "last_refusal": asdict(stats.last_refusal) if stats.last_refusal else None,
            },
            "holds": self.held.status(),
            "probes": self.probes.status(),
            "alarms": self.edge_status().alarms,
        }

    def control_access(self) -> ControlAccess:
        """The control API's Host names and token (the token file is made if missing)."""
        s = self.settings
        return ControlAccess.of(
            load_or_create_token(s.token_file),
            s.control_host,
            s.control_port,
            s.control_host_names,
            s.token_file,
        )

    async def run(self, poll: bool = True, control: bool = True) -> None:
        """Run until cancelled. poll=False leaves capture to the caller (tests call poll_once)."""
        access = self.control_access() if control else None
        self._poll = poll
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self.publisher.run(), name="publisher")
            group.create_task(self._commit_groups(), name="outbox-commit")
            group.create_task(self._close_gate_windows(), name="gate-windows")
            group.create_task(self.configurator.run(), name="site-configurator")
            group.create_task(self.probes.run(), name="probes")
            for name in self.devices:
                self._start_device(name)
            if access is not None:
                config = uvicorn.Config(
                    create_control_app(self.binder, self.status, self.stations, access=access),
                    host=self.settings.control_host,
                    port=self.settings.control_port,
                    log_level="warning",
                    lifespan="off",  # nothing to set up, and a clean exit when cancelled
                )
                group.create_task(uvicorn.Server(config).serve(), name="control-api")

    def _start_device(self, name: str) -> None:
        if self._poll and self._group is not None:
            self._runs[name] = self._group.create_task(
                self.devices[name].run(), name=f"device:{name}"
            )

    async def _stop_device(self, name: str) -> None:
        task = self.devices.pop(name)
        run = self._runs.pop(name, None)
        if run is not None:
            run.cancel()
            # Waits for it to end without taking its CancelledError for our own: a cancel of
            # the apply itself (the agent stopping) must still end the apply.
            await asyncio.wait({run})
        try:
            await task.driver.close()
        except Exception as err:  # a device half gone: its replacement opens anew
            log.warning("device %s: closing it for the new site version: %s", name, err)

    async def apply_site(self, new: ResolvedSite, changes: SiteChanges) -> None:
        """Run a new site version (validated whole by the configurator) without a restart:
        only the devices it adds, changes or removes start or stop; the others keep
        capturing, and the outbox is not touched. ApplyRefused (nothing changed) when it
        cannot be applied now."""
        new_lines = [s.id for s in new.document.lines]
        for line in self.site.line_ids:
            active = self.context.active(line)
            if line not in new_lines and active is not None:
                raise ApplyRefused(
                    f"line {line} runs batch {active.batch_id}: end the batch before a site "
                    "version that removes the line"
                )
        old_site, site = self.site, site_of(new)
        self.site = site  # the stations the new devices' handlers are built for
        try:
            built = {
                name: self._device_task(placed.station, placed.profile)
                for name, placed in new.devices.items()
                if name in changes.added or name in changes.changed
            }
        except Exception as err:
            self.site = old_site
            raise ApplyRefused(f"a device of the new version cannot be built: {err}") from err
        for name in changes.restarted:
            await self._stop_device(name)
            self.binder.batch_tags.pop(name, None)
        self.context.lines = list(site.line_ids)
        # A new rule numbers the next batch started without an id; the sequence goes on.
        self.binder.numbers.rules = site.numbering
        self.stations.lines = list(site.line_ids)
        self.stations.docks = list(site.dock_ids)
        self.stations.parties = site.dock_parties
        self.stations.warehouse = site.warehouse
        for name, (_, to) in changes.moved.items():
            self._move_device(name, to, new.devices[name].profile)
        for name, task in built.items():
            profile = new.devices[name].profile
            if profile.batch_source is not None:
                self.binder.batch_tags[name] = BatchTag.of(profile.batch_source)
            self.devices[name] = task
            self._start_device(name)
        self.gates = [
            t.on_events for t in self.devices.values() if isinstance(t.on_events, GateStation)
        ]
        self._announce_specs(set(built))

    def _move_device(self, name: str, station: str, profile: DeviceProfile) -> None:
        """A device moved to another station keeps its task and its connection: its next
        readings are bound to the new station (and its active batch). A streaming device's
        reads go to the new station's handler; what the old one still held goes out first,
        at the station where it was read."""
        task = self.devices[name]
        old = task.on_events
        if isinstance(old, GateStation):
            old.tick(datetime.now(UTC) + timedelta(seconds=old.profile.window_s + 1))
        task.line_id = station
        if old is not None:
            task.on_events = self._station_input(station, profile, self.protocols.entry_of(profile))

    async def _close_gate_windows(self) -> None:
        """A gate's window closes with time, also when the tag has left and reads stop."""
        while True:
            await asyncio.sleep(0.5)
            now = datetime.now(UTC)
            for gate in self.gates:
                gate.tick(now)

    async def _commit_groups(self) -> None:
        """Ends each group commit on time even when no further append arrives."""
        interval = self.settings.outbox_commit_interval_s or 0.05
        while True:
            await asyncio.sleep(interval)
            self.outbox.flush()

    def close(self) -> None:
        self.store.close()


def _last_values(task: DeviceTask) -> list[TagValue]:
    """A device's last value of each tag as the status carries it (a value the contract
    cannot carry, such as a NaN, as no value of bad quality; a tag it refuses, left out)."""
    values = []
    for sample, taken_at in list(task.last_values.values())[:MAX_STATUS_ITEMS]:
        usable = sample.value is not None and math.isfinite(sample.value)
        try:
            values.append(
                TagValue(
                    tag=sample.tag,
                    value=sample.value if usable else None,
                    unit=sample.unit,
                    quality=sample.quality if usable or sample.value is None else "bad",
                    time=taken_at,
                )
            )
        except ValidationError:
            continue  # its readings were refused too, and counted there (binder.refusals)
    return values
