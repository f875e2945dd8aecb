"""Device profiles and site configurations in versions, their diffs, pushes to edges,
rollbacks and the audit (cloud_collector/provisioning.py). Role provisioner changes;
reader (and provisioner) look."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cloud_collector import edge_probes, provisioning
from cloud_collector.auth import Principal, Role, require
from cloud_collector.endpoints import Conn, app_pool, app_settings
from cloud_collector.provisioning import (
    AuditEntry,
    InvalidContent,
    NotFound,
    ProvisioningSettings,
    PushFailed,
    Subject,
    VersionContent,
    VersionDiff,
    VersionInfo,
)
from protocols.mqtt.contract import MAX_PROBE_SECONDS, ProbeResult, storable

T = TypeVar("T")
LOOK = [Depends(require(Role.reader, Role.provisioner))]
CHANGE = [Depends(require(Role.provisioner))]

router = APIRouter(prefix="/api/v1/provisioning", tags=["provisioning"])

Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
Comment = Annotated[str, Field(max_length=2000)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("comment", mode="after", check_fields=False)
    @classmethod
    def _storable(cls, value: str) -> str:
        return storable(value)


class NewVersion(_Body):
    content: dict[str, Any]
    comment: Comment = ""


class NewSiteVersion(NewVersion):
    push: bool = True  # publish it to the edge at once


class Rollback(_Body):
    version: Version
    comment: Comment = ""
    push: bool = True


class Content(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: dict[str, Any]


class Validation(BaseModel):
    ok: bool
    problems: list[str]


class Created(BaseModel):
    version: VersionInfo
    pushed: bool
    push_error: str | None = None


def _who(request: Request) -> str:
    principal: Principal = request.state.principal
    return principal.name


def _invalid(err: InvalidContent) -> HTTPException:
    return HTTPException(422, {"message": "the content is invalid", "problems": err.problems})


def _publisher(request: Request) -> provisioning.Publish | None:
    """How this collector pushes (a test may set app.state.site_publisher)."""
    own = getattr(request.app.state, "site_publisher", None)
    if own is not None:
        publish: provisioning.Publish = own
        return publish
    settings = ProvisioningSettings()
    broker = settings.broker(app_settings(request).mqtt)
    if broker is None:
        return None
    return provisioning.mqtt_publisher(broker, settings.push_timeout_s)


def _one_session(request: Request) -> asyncio.Lock:
    """Pushes and probes of this process take turns: they connect under the one
    provisioning identity, and the broker (use_username_as_clientid) lets an identity hold
    one session, dropping the older one when a second connects."""
    lock: asyncio.Lock | None = getattr(request.app.state, "provisioning_session", None)
    if lock is None:
        lock = request.app.state.provisioning_session = asyncio.Lock()
    return lock


_NO_PUSHER = (
    "this collector cannot push: TRACE_PROVISIONING_USERNAME is unset. Issue it an identity "
    "of its own (`tracectl broker add NAME --kind collector`), set "
    "TRACE_PROVISIONING_USERNAME/_PASSWORD and push again (`tracectl site push EDGE VERSION`)"
)


async def _push(request: Request, conn: Conn, edge_id: str, version: int) -> Created:
    publish = _publisher(request)
    info = await provisioning.versions_of(conn, edge_id, version)
    if publish is None:
        return Created(version=info, pushed=False, push_error=_NO_PUSHER)
    try:
        async with _one_session(request):
            info = await provisioning.push(conn, edge_id, version, _who(request), publish)
    except PushFailed as err:
        return Created(version=info, pushed=False, push_error=str(err))
    return Created(version=info, pushed=True)


# ---- Profiles -------------------------------------------------------------------------


@router.get("/profiles", dependencies=LOOK)
async def list_profiles(conn: Conn) -> list[VersionInfo]:
    """Every profile in the registry, at its newest version."""
    return await provisioning.latest(conn, "profile")


@router.post("/profiles", status_code=201, dependencies=CHANGE)
async def create_profile(body: NewVersion, request: Request, conn: Conn) -> VersionInfo:
    """A new version of the profile the content names (its `name`)."""
    try:
        return await provisioning.create_profile(conn, body.content, _who(request), body.comment)
    except InvalidContent as err:
        raise _invalid(err) from err


@router.post("/profiles/validate", dependencies=LOOK)
async def validate_profile(body: Content) -> Validation:
    """What the registry would say of this profile, storing nothing."""
    try:
        provisioning.check_profile(body.content)
    except InvalidContent as err:
        return Validation(ok=False, problems=err.problems)
    return Validation(ok=True, problems=[])


# ---- Sites ----------------------------------------------------------------------------


@router.get("/sites", dependencies=LOOK)
async def list_sites(conn: Conn) -> list[VersionInfo]:
    """Every edge with a site in the registry, at its newest version."""
    return await provisioning.latest(conn, "site")


@router.post("/sites/validate", dependencies=LOOK)
async def validate_site(body: Content) -> Validation:
    content = body.content
    edge = content.get("edge_id")
    try:
        provisioning.check_site(edge if isinstance(edge, str) else "", content)
    except InvalidContent as err:
        return Validation(ok=False, problems=err.problems)
    return Validation(ok=True, problems=[])


@router.post("/sites/{edge_id}", status_code=201, dependencies=CHANGE)
async def create_site(edge_id: str, body: NewSiteVersion, request: Request, conn: Conn) -> Created:
    """A new version of the edge's site, pushed to it unless `push` is false."""
    try:
        info = await provisioning.create_site(
            conn, edge_id, body.content, _who(request), body.comment
        )
    except InvalidContent as err:
        raise _invalid(err) from err
    except NotFound as err:
        raise HTTPException(404, str(err)) from err
    if not body.push:
        return Created(version=info, pushed=False)
    return await _push(request, conn, edge_id, info.version)


@router.post("/sites/{edge_id}/versions/{version}/push", dependencies=CHANGE)
async def push_site(edge_id: str, version: int, request: Request, conn: Conn) -> Created:
    """Publish the version to its edge again (after a failed push, or to re-apply it)."""
    await _found(provisioning.versions_of(conn, edge_id, version))
    created = await _push(request, conn, edge_id, version)
    if not created.pushed:
        raise HTTPException(503, created.push_error, headers={"Retry-After": "5"})
    return created


@router.post("/sites/{edge_id}/rollback", status_code=201, dependencies=CHANGE)
async def rollback_site(edge_id: str, body: Rollback, request: Request, conn: Conn) -> Created:
    """A new version with an earlier version's content, pushed unless `push` is false."""
    try:
        info = await provisioning.rollback(conn, edge_id, body.version, _who(request), body.comment)
    except NotFound as err:
        raise HTTPException(404, str(err)) from err
    except InvalidContent as err:  # an old version the current schema no longer takes
        raise _invalid(err) from err
    if not body.push:
        return Created(version=info, pushed=False)
    return await _push(request, conn, edge_id, info.version)


# ---- Versions of either registry --------------------------------------------------------

# One path for both registries: a profile by its name, a site by its edge id.
Registry = Literal["profiles", "sites"]
SUBJECT: dict[str, Subject] = {"profiles": "profile", "sites": "site"}


@router.get("/{registry}/{name}", dependencies=LOOK)
async def versions(registry: Registry, name: str, conn: Conn) -> list[VersionInfo]:
    """Every version of a profile (by name) or of an edge's site (by edge id), newest first."""
    return await _found(provisioning.versions(conn, SUBJECT[registry], name))


@router.get("/{registry}/{name}/versions/{version}", dependencies=LOOK)
async def version(registry: Registry, name: str, version: int, conn: Conn) -> VersionContent:
    return await _found(provisioning.version_content(conn, SUBJECT[registry], name, version))


@router.get("/{registry}/{name}/diff", dependencies=LOOK)
async def diff(
    registry: Registry,
    name: str,
    conn: Conn,
    from_version: Annotated[int, Query(alias="from", ge=1)],
    to_version: Annotated[int, Query(alias="to", ge=1)],
) -> VersionDiff:
    return await _found(provisioning.diff(conn, SUBJECT[registry], name, from_version, to_version))


# ---- Probes through an edge ------------------------------------------------------------


class ProbeAsk(_Body):
    """A probe for an edge to run: a device of the site it runs, or a profile (a new one)."""

    device: (
        Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")] | None
    ) = None
    profile: dict[str, Any] | None = None
    # How long a listening device (RFID reader, scanner) is listened to.
    seconds: Annotated[float, Field(gt=0, le=MAX_PROBE_SECONDS)] = 5.0

    @model_validator(mode="after")
    def _one_subject(self) -> ProbeAsk:
        if (self.device is None) == (self.profile is None):
            raise ValueError("name either `device` (of the edge's running site) or `profile`")
        return self


_NO_PROBER = (
    "this collector cannot ask an edge for a probe: TRACE_PROVISIONING_USERNAME is unset. "
    "Issue it an identity of its own (`tracectl broker add NAME --kind collector`) and set "
    "TRACE_PROVISIONING_USERNAME/_PASSWORD"
)


@router.post(
    "/edges/{edge_id}/probe",
    dependencies=CHANGE,
    responses={
        404: {"description": "no such edge"},
        502: {"description": "the edge's answer was unreadable"},
        503: {"description": "this collector cannot reach the broker to ask"},
        504: {"description": "the edge did not answer in time"},
    },
)
async def probe_through_edge(edge_id: str, body: ProbeAsk, request: Request) -> ProbeResult:
    """The edge reads the profile once against the live device (a listening device: for
    `seconds`) and the result comes back: per tag where it was read, the raw registers or
    node value, the decoded value, unit and quality beside the spec limits. A probe the edge
    could not run has `error` set. Capture on the edge goes on meanwhile. Audited as
    `probed`. No database connection is held while the edge works."""
    profile_text = None
    async with app_pool(request).connection() as conn:
        try:
            await provisioning.edge_in_force(conn, edge_id)
            if body.profile is not None:
                provisioning.check_profile(body.profile)
                profile_text = provisioning.canonical_content(body.profile)
        except NotFound as err:
            raise HTTPException(404, str(err)) from err
        except InvalidContent as err:
            raise _invalid(err) from err
    settings = ProvisioningSettings()
    broker = settings.broker(app_settings(request).mqtt)
    if broker is None:
        raise HTTPException(503, _NO_PROBER, headers={"Retry-After": "5"})
    try:
        asked = edge_probes.request_for(
            edge_id, uuid.uuid4().hex, _who(request), body.seconds, body.device, profile_text
        )
    except ValidationError as err:  # e.g. a profile over what one probe request carries
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise HTTPException(
            422, {"message": "cannot ask this probe", "problems": problems}
        ) from err
    named = body.device or str((body.profile or {}).get("name", "?"))[:128]
    try:
        async with _one_session(request):
            result = await edge_probes.ask_edge(broker, asked, settings.probe_wait_s)
    except edge_probes.ProbeUnanswered as err:
        await _audit_probe(request, edge_id, named, f": no result: {err}")
        raise HTTPException(err.status, str(err)) from err
    with_profile = f" with profile sha256 {result.profile_sha256}" if result.profile_sha256 else ""
    await _audit_probe(request, edge_id, result.device, f"{with_profile}: {result.summary()}")
    return result


async def _audit_probe(request: Request, edge_id: str, device: str, detail: str) -> None:
    async with app_pool(request).connection() as conn:
        await provisioning.audit(
            conn,
            _who(request),
            "probed",
            "profile",
            device,
            None,
            f"through edge {edge_id}{detail}",
        )


# ---- Audit ----------------------------------------------------------------------------


class ProbeRecord(_Body):
    """A probe run on a line PC (`tracectl profile probe FILE --record`), for the audit."""

    device: Annotated[str, Field(min_length=1, max_length=64)]
    protocol: Annotated[str, Field(min_length=1, max_length=64)]
    profile_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    where: Annotated[str, Field(max_length=200)] = ""  # the host it ran on
    summary: Annotated[str, Field(max_length=4000)] = ""

    @field_validator("device", "protocol", "where", "summary", mode="after")
    @classmethod
    def _storable_text(cls, value: str) -> str:
        return storable(value)


@router.post("/probes", status_code=201, dependencies=CHANGE)
async def record_probe(body: ProbeRecord, request: Request, conn: Conn) -> dict[str, str]:
    """Who probed which device, where, with which profile content, and what it answered."""
    detail = f"on {body.where or '?'} with profile sha256 {body.profile_sha256}: {body.summary}"
    await provisioning.audit(conn, _who(request), "probed", "profile", body.device, None, detail)
    return {"recorded": "probed"}


@router.get("/audit", dependencies=LOOK)
async def audit(
    conn: Conn,
    subject: Subject | None = None,
    name: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditEntry]:
    """Who created, pushed, rolled back what, and what the edges applied or refused, newest
    first."""
    return await provisioning.audit_log(conn, subject, name, limit)


async def _found(pending: Awaitable[T]) -> T:
    try:
        result = await pending
    except NotFound as err:
        raise HTTPException(404, str(err)) from err
    return result
