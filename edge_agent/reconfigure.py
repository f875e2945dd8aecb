"""Site configuration pushed by the collector, applied while capture goes on.

The collector publishes each site version retained on trace/v1/edges/{edge}/config/site
(only collectors may publish there: the broker's ACL). Whatever arrives is outside input:

1. the envelope is read strictly (`SitePush`): this edge's id, a version, the SHA-256 of
   the content, which must match the content's own hash;
2. the content is validated whole (`device_profiles.sites.resolve_site`: every profile,
   every override, unique device names, this edge's id) before anything stops;
3. the dry run (`site_changes`) says which devices are added, removed or changed; a line
   that runs a batch cannot be removed;
4. the runtime applies it (`EdgeAgent.apply_site`): only the changed and removed devices
   stop, the others keep capturing, the outbox is not touched.

A version that fails any step is refused with the reason (in the edge's status, where the
technician sees it through the collector) and the running configuration stays. Applied and
refused versions are kept in the edge's store; the newest applied one is what the edge runs
after a restart, also without a broker. An edge that was offline gets the newest version
(retained) when it connects. The version it runs, delivered again, changes nothing; another
content under a version not above it is refused (a registry that was reset).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from device_profiles.sites import (
    BundledDevice,
    BundledDock,
    BundledStation,
    BundledWarehouse,
    PlacedDevice,
    ResolvedSite,
    SiteChanges,
    SiteDocument,
    SiteDocumentError,
    content_hash,
    resolve_site,
    site_changes,
)
from edge_agent.site import DeviceRef, DockConfig, LineConfig, Site, SiteConfig, WarehouseConfig
from edge_agent.store import EdgeStore
from protocols.mqtt.contract import MAX_STATUS_ITEMS, SiteConfigState, SitePush

log = logging.getLogger(__name__)

MAX_PUSH_BYTES = 5 * 1024 * 1024
KEEP_VERSIONS = 20  # applied and refused versions kept in the store


class ApplyRefused(ValueError):
    """The site is valid but cannot be applied now (a removed line runs a batch)."""


def site_of(resolved: ResolvedSite) -> Site:
    """The runtime's Site for a resolved site document."""
    doc = resolved.document
    stations = resolved.stations()

    def refs(station: str) -> list[DeviceRef]:
        return [DeviceRef(profile=Path(p.name)) for p in stations[station]]

    config = SiteConfig(
        edge_id=doc.edge_id,
        lines=[LineConfig(id=s.id, devices=refs(s.id), numbering=s.numbering) for s in doc.lines],
        docks=[DockConfig(id=s.id, devices=refs(s.id), parties=s.parties) for s in doc.docks],
        warehouse=[
            WarehouseConfig(id=s.id, step=s.step, place=s.place, to=s.to, devices=refs(s.id))
            for s in doc.warehouse
        ],
    )
    return Site(config, stations)


def running_site(site: Site) -> ResolvedSite:
    """What runs, in the form a pushed site is compared with (the profiles as merged)."""

    def bundled(sid: str) -> list[BundledDevice]:
        return [BundledDevice(profile=p.model_dump(mode="json")) for p in site.devices[sid]]

    parties = site.dock_parties
    doc = SiteDocument(
        edge_id=site.edge_id,
        lines=[
            BundledStation(id=s, devices=bundled(s), numbering=site.numbering.get(s))
            for s in site.line_ids
        ],
        docks=[
            BundledDock(id=s, devices=bundled(s), parties=parties.get(s, [])) for s in site.dock_ids
        ],
        warehouse=[
            BundledWarehouse(id=s, devices=bundled(s), **work.model_dump())
            for s, work in site.warehouse.items()
        ],
    )
    devices = {
        p.name: PlacedDevice(sid, _kind(site, sid), p)
        for sid, profiles in site.devices.items()
        for p in profiles
    }
    return ResolvedSite(doc, devices)


def _kind(site: Site, station: str) -> Literal["line", "dock", "warehouse"]:
    if station in site.line_ids:
        return "line"
    return "warehouse" if station in site.warehouse else "dock"


Apply = Callable[[ResolvedSite, SiteChanges], Awaitable[None]]

_LATEST_APPLIED = """
select version, sha256, content, changed_at from site_versions where state = 'applied'
order by version desc limit 1
"""
_KEEP = """
insert into site_versions (version, sha256, content, received_at, state, reason, changed_at)
values (?, ?, ?, ?, ?, ?, ?)
on conflict (version) do update set sha256 = excluded.sha256, content = excluded.content,
    received_at = excluded.received_at, state = excluded.state, reason = excluded.reason,
    changed_at = excluded.changed_at
"""
_PRUNE = """
delete from site_versions where version not in
    (select version from site_versions order by version desc limit ?)
"""
_KEPT = "select version from site_versions where state = 'applied' order by version desc"


def last_applied(
    store: EdgeStore, edge_id: str, files_at: Path
) -> tuple[int, str, ResolvedSite] | None:
    """The newest applied version in the store, if it still validates for this edge
    (version, sha256, site); None otherwise (then the site file runs)."""
    row = store.db.execute(_LATEST_APPLIED).fetchone()
    if row is None:
        return None
    version, sha256, content, _ = row
    try:
        site = resolve_site(json.loads(content), f"stored version {version}", files_at)
    except (SiteDocumentError, ValueError) as err:
        log.error(
            "site version %s in the store no longer validates (%s): running the site file",
            version,
            err,
        )
        return None
    if site.edge_id != edge_id:
        return None
    return int(version), str(sha256), site


class SiteConfigurator:
    """Takes pushed site versions, checks them, has them applied, and says what runs."""

    def __init__(
        self,
        edge_id: str,
        store: EdgeStore,
        running: ResolvedSite,
        apply: Apply,
        files_at: Path,
        version: int | None = None,
        sha256: str | None = None,
    ) -> None:
        self.edge_id = edge_id
        self.store = store
        self.running = running
        self.apply = apply
        self.files_at = files_at
        self._state = SiteConfigState(version=version, sha256=sha256, kept=self._kept())
        # The newest message waiting; a newer one replaces it (only the newest matters).
        self._pending: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)

    def state(self) -> SiteConfigState:
        return self._state

    def offer(self, payload: bytes) -> None:
        """A message of the config topic (called from the publisher's receive loop: never
        blocks, never raises)."""
        if self._pending.full():
            self._pending.get_nowait()
        self._pending.put_nowait(payload)

    async def run(self) -> None:
        while True:
            payload = await self._pending.get()
            await self.handle(payload)

    async def handle(self, payload: bytes) -> bool:
        """Apply one pushed version, or refuse it with the reason; True if applied."""
        if not payload:
            return False  # a cleared retained message: nothing pushed
        if len(payload) > MAX_PUSH_BYTES:
            self._refuse(None, f"the push is {len(payload)} bytes, over {MAX_PUSH_BYTES}")
            return False
        try:
            push = SitePush.model_validate_json(payload, strict=True)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(message)"
            self._refuse(None, f"not a site push of the trace.v1 contract: {where}: {first['msg']}")
            return False
        current = self._state.version
        if current is not None and push.version <= current:
            if push.version == current and push.sha256 == self._state.sha256:
                return False  # what it runs, delivered again (retained, on reconnect)
            self._refuse(
                push.version,
                f"version {push.version} is not newer than version {current} that this edge "
                "runs (with other content): was the collector's registry reset? Push the "
                f"content as a version above {current}",
            )
            return False
        try:
            site, changes = self._check(push)
        except (SiteDocumentError, ValueError) as err:
            self._refuse(push.version, str(err), push)
            return False
        try:
            await self.apply(site, changes)
        except ApplyRefused as err:
            self._refuse(push.version, str(err), push)
            return False
        except Exception as err:
            # A fault of the apply itself, not of the version: refused and logged in full,
            # never taking capture down with it. Devices it had restarted run the new
            # profiles; pushing the version again finishes the apply.
            log.exception("site version %s: the apply failed", push.version)
            self._refuse(push.version, f"the apply failed: {type(err).__name__}: {err}", push)
            return False
        now = datetime.now(UTC)
        self._keep(push, "applied", None)
        self.running = site
        self._state = SiteConfigState(
            version=push.version,
            sha256=push.sha256,
            applied_at=now,
            restarted=changes.restarted[:MAX_STATUS_ITEMS],
            moved=list(changes.moved)[:MAX_STATUS_ITEMS],
            refused_version=self._state.refused_version,
            refused_reason=self._state.refused_reason,
            refused_at=self._state.refused_at,
            kept=self._kept(),
        )
        log.info(
            "site version %s (by %s: %s) applied: %s",
            push.version,
            push.author,
            push.comment or "no comment",
            "; ".join(changes.lines()),
        )
        return True

    def _check(self, push: SitePush) -> tuple[ResolvedSite, SiteChanges]:
        if push.edge_id != self.edge_id:
            raise ValueError(
                f"the push is for edge {push.edge_id!r}, this edge is {self.edge_id!r}"
            )
        if content_hash(push.content) != push.sha256:
            raise ValueError(
                "the content's SHA-256 is not the one in the push: it was altered or cut on "
                "the way; push the version again"
            )
        try:
            data = json.loads(push.content)
        except (ValueError, RecursionError) as err:
            raise ValueError(f"the content is not JSON: {err}") from err
        site = resolve_site(data, f"site version {push.version}", self.files_at)
        if site.edge_id != self.edge_id:
            raise ValueError(
                f"edge_id: the site is for edge {site.edge_id!r}, this edge is {self.edge_id!r}"
            )
        return site, site_changes(self.running, site)

    def _refuse(self, version: int | None, reason: str, push: SitePush | None = None) -> None:
        reason = reason.replace("\x00", "\\x00")[:2000]
        log.error("site version %s refused: %s", version if version else "?", reason)
        if push is not None:
            self._keep(push, "refused", reason)
        self._state = self._state.model_copy(
            update={
                "refused_version": version,
                "refused_reason": reason,
                "refused_at": datetime.now(UTC),
                "kept": self._kept(),
            }
        )

    def _keep(self, push: SitePush, state: str, reason: str | None) -> None:
        now = datetime.now(UTC).isoformat()
        with self.store.transaction() as db:
            db.execute(
                _KEEP,
                (push.version, push.sha256, push.content, now, state, reason, now),
            )
            db.execute(_PRUNE, (KEEP_VERSIONS,))

    def _kept(self) -> list[int]:
        return [int(r[0]) for r in self.store.db.execute(_KEPT).fetchall()][:100]
