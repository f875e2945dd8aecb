"""The provisioning registry: device profiles and each edge's site configuration in versions
(author, time, comment, SHA-256 of the canonical content), diffs between any two, the push
of a site version to its edge, and the audit of every change, push, apply and refusal.

**Whose sites.** A site belongs to an edge of the registry the broker's ACLs come from
(`broker_identities`, kind edge, in force): no version is made for an edge that could not
connect to receive it.

**Versions are never edited.** A rollback makes a new version with an earlier one's content
(`restores` names it), so the history reads in the order things happened.

**Push.** A site version goes to its edge as a `SitePush` (protocols/mqtt/contract.py),
retained on trace/v1/edges/{edge}/config/site, QoS 1: an edge that is offline gets the
newest version when it connects. The collector publishes under an identity of its own
(TRACE_PROVISIONING_USERNAME / _PASSWORD, kind collector): the broker lets only collectors
publish there. The edge checks the envelope (edge id, version, SHA-256 of the content),
validates the site whole and reports what it runs, or what it refused and why, in its
status; `record_edge_report` turns those into audit rows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import aiomqtt
import psycopg
from psycopg.rows import dict_row
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_collector.edge_probes import WAIT_MARGIN_S
from device_profiles.schema import ProfileError, parse_profile
from device_profiles.sites import (
    MAX_DOCUMENT_BYTES,
    SiteDocumentError,
    canonical_json,
    content_hash,
    profile_changes,
    resolve_site,
    site_changes,
    unified_diff,
)
from protocols.mqtt import topics
from protocols.mqtt.connection import ENV_FILE, BrokerSettings
from protocols.mqtt.contract import EdgeStatus, SitePush
from protocols.strict import Strict

Subject = Literal["profile", "site"]


class ProvisioningSettings(BaseSettings):
    """TRACE_PROVISIONING_*: the broker identity this collector pushes configurations with
    (kind collector, its own: one identity holds one connection)."""

    model_config = SettingsConfigDict(
        env_prefix="TRACE_PROVISIONING_", env_file=ENV_FILE, extra="ignore"
    )

    username: str | None = None
    password: str | None = None
    push_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # How long past a probe's listening time the collector waits for the edge's result.
    probe_wait_s: float = Field(default=WAIT_MARGIN_S, gt=0, le=300)

    def broker(self, collector: BrokerSettings) -> BrokerSettings | None:
        if self.username is None:
            return None
        return collector.model_copy(update={"username": self.username, "password": self.password})


class InvalidContent(ValueError):
    """A profile or site the edge would refuse; `problems` names each and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class NotFound(LookupError):
    """No such profile, edge or version; the message says what exists."""


class PushFailed(RuntimeError):
    """The broker did not take the push; the version is kept, not pushed."""


class VersionInfo(Strict):
    subject: Subject
    name: str  # the profile's name or the edge id
    version: int
    sha256: str
    author: str
    comment: str
    created_at: datetime
    restores: int | None = None
    pushed_at: datetime | None = None


class VersionContent(VersionInfo):
    content: dict[str, Any]


class AuditEntry(Strict):
    id: int
    at: datetime
    actor: str
    action: str
    subject: Subject
    name: str
    version: int | None
    detail: str


class VersionDiff(Strict):
    subject: Subject
    name: str
    from_version: int
    to_version: int
    changes: list[str]  # devices (or tags) added, removed, changed
    diff: str  # unified diff of the canonical YAML


# ---- Validation ------------------------------------------------------------------------


def canonical_content(content: object) -> str:
    try:
        text = canonical_json(content)
    except SiteDocumentError as err:
        raise InvalidContent(err.problems) from err
    if len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        raise InvalidContent(
            [f"the content is over {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB: split the site"]
        )
    return text


def check_profile(content: object) -> str:
    """The profile's name; InvalidContent with the schema's problems otherwise."""
    try:
        return parse_profile(content, "profile").name
    except ProfileError as err:
        raise InvalidContent(err.problems) from err


def check_site(edge_id: str, content: object) -> None:
    try:
        site = resolve_site(content, "site")
    except SiteDocumentError as err:
        raise InvalidContent(err.problems) from err
    if site.edge_id != edge_id:
        raise InvalidContent(
            [f"edge_id: the content names edge {site.edge_id!r}, not {edge_id!r}: fix edge_id"]
        )


# ---- Statements ------------------------------------------------------------------------

_LOCK = "select pg_advisory_xact_lock(hashtext(%(key)s))"
_EDGE_IN_FORCE = """
select exists (select 1 from broker_identities
               where kind = 'edge' and name = %(edge)s and revoked_at is null)
"""
_PROFILE_COLUMNS = "'profile' as subject, name, version, sha256, author, comment, created_at"
_SITE_COLUMNS = (
    "'site' as subject, edge_id as name, version, sha256, author, comment, created_at, "
    "restores, pushed_at"
)


@dataclass(frozen=True)
class _Statements:
    """One registry's statements: profiles by name, sites by edge id, the same shapes."""

    next: str
    insert: str
    latest: str
    versions: str
    version: str


_SQL: dict[Subject, _Statements] = {
    "profile": _Statements(
        next="""
select coalesce(max(version), 0) + 1 from device_profile_versions where name = %(name)s
""",
        insert=f"""
insert into device_profile_versions (name, version, content, sha256, author, comment)
values (%(name)s, %(version)s, %(content)s, %(sha256)s, %(author)s, %(comment)s)
returning {_PROFILE_COLUMNS}
""",
        latest=f"""
select distinct on (name) {_PROFILE_COLUMNS} from device_profile_versions
order by name, version desc
""",
        versions=f"""
select {_PROFILE_COLUMNS} from device_profile_versions where name = %(name)s
order by version desc
""",
        version=f"""
select {_PROFILE_COLUMNS}, content from device_profile_versions
where name = %(name)s and (%(version)s::int is null or version = %(version)s::int)
order by version desc limit 1
""",
    ),
    "site": _Statements(
        next="select coalesce(max(version), 0) + 1 from site_versions where edge_id = %(name)s",
        insert=f"""
insert into site_versions (edge_id, version, content, sha256, author, comment, restores)
values (%(name)s, %(version)s, %(content)s, %(sha256)s, %(author)s, %(comment)s, %(restores)s)
returning {_SITE_COLUMNS}
""",
        latest=f"""
select distinct on (edge_id) {_SITE_COLUMNS} from site_versions order by edge_id, version desc
""",
        versions=f"""
select {_SITE_COLUMNS} from site_versions where edge_id = %(name)s order by version desc
""",
        version=f"""
select {_SITE_COLUMNS}, content from site_versions
where edge_id = %(name)s and (%(version)s::int is null or version = %(version)s::int)
order by version desc limit 1
""",
    ),
}
_PUSHED = """
update site_versions set pushed_at = now() where edge_id = %(name)s and version = %(version)s
"""
_AUDIT = """
insert into provisioning_audit (actor, action, subject, name, version, detail)
values (%(actor)s, %(action)s, %(subject)s, %(name)s, %(version)s, %(detail)s)
on conflict do nothing
"""
_AUDIT_LIST = """
select id, at, actor, action, subject, name, version, detail from provisioning_audit
where (%(subject)s::text is null or subject = %(subject)s::text)
    and (%(name)s::text is null or name = %(name)s::text)
order by id desc limit %(limit)s
"""


async def audit(
    conn: psycopg.AsyncConnection,
    actor: str,
    action: str,
    subject: Subject,
    name: str,
    version: int | None,
    detail: str = "",
) -> None:
    await conn.execute(
        _AUDIT,
        {
            "actor": actor,
            "action": action,
            "subject": subject,
            "name": name,
            "version": version,
            "detail": detail[:4000],
        },
    )


async def audit_log(
    conn: psycopg.AsyncConnection,
    subject: Subject | None = None,
    name: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_AUDIT_LIST, {"subject": subject, "name": name, "limit": limit})
    return [AuditEntry.model_validate(row) for row in await cur.fetchall()]


# ---- Profiles ------------------------------------------------------------------------


async def create_profile(
    conn: psycopg.AsyncConnection, content: object, author: str, comment: str
) -> VersionInfo:
    """A new version of the profile `content` names (its `name`); InvalidContent if the
    schema refuses it."""
    name = check_profile(content)
    return await _new_version(
        conn,
        "profile",
        name,
        canonical_content(content),
        author,
        comment,
        "profile_created",
        comment,
    )


async def _new_version(
    conn: psycopg.AsyncConnection,
    subject: Subject,
    name: str,
    text: str,
    author: str,
    comment: str,
    action: str,
    detail: str,
    restores: int | None = None,
) -> VersionInfo:
    """The next version of a profile or a site, and its audit row, in one transaction (the
    lock makes two creators take consecutive numbers)."""
    sql = _SQL[subject]
    async with conn.transaction():
        await conn.execute(_LOCK, {"key": f"{subject}:{name}"})
        version = await _scalar(conn, sql.next, {"name": name})
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            sql.insert,
            {
                "name": name,
                "version": version,
                "content": text,
                "sha256": content_hash(text),
                "author": author,
                "comment": comment,
                "restores": restores,
            },
        )
        info = VersionInfo.model_validate(await cur.fetchone())
        await audit(conn, author, action, subject, name, version, detail)
    return info


async def _scalar(conn: psycopg.AsyncConnection, sql: str, params: dict[str, Any]) -> int:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def latest(conn: psycopg.AsyncConnection, subject: Subject) -> list[VersionInfo]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SQL[subject].latest)
    return [VersionInfo.model_validate(row) for row in await cur.fetchall()]


async def versions(conn: psycopg.AsyncConnection, subject: Subject, name: str) -> list[VersionInfo]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SQL[subject].versions, {"name": name})
    found = [VersionInfo.model_validate(row) for row in await cur.fetchall()]
    if not found:
        raise NotFound(f"no {subject} {name!r} in the registry ({_where_listed(subject)})")
    return found


def _where_listed(subject: Subject) -> str:
    return f"GET /api/v1/provisioning/{subject}s lists them; `tracectl {subject} list`"


async def version_content(
    conn: psycopg.AsyncConnection, subject: Subject, name: str, version: int | None = None
) -> VersionContent:
    """One version with its content (None: the newest)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SQL[subject].version, {"name": name, "version": version})
    row = await cur.fetchone()
    if row is None:
        which = "any version" if version is None else f"version {version}"
        raise NotFound(f"{subject} {name!r} has no {which} ({_where_listed(subject)})")
    row["content"] = json.loads(row["content"])
    return VersionContent.model_validate(row)


async def diff(
    conn: psycopg.AsyncConnection, subject: Subject, name: str, a: int, b: int
) -> VersionDiff:
    old = await version_content(conn, subject, name, a)
    new = await version_content(conn, subject, name, b)
    if subject == "profile":
        changes = profile_changes(parse_profile(old.content), parse_profile(new.content))
        changes = changes or ["no change"]
    else:
        changes = site_changes(resolve_site(old.content), resolve_site(new.content)).lines()
    return VersionDiff(
        subject=subject,
        name=name,
        from_version=a,
        to_version=b,
        changes=changes,
        diff=unified_diff(old.content, new.content, f"{name} v{a}", f"{name} v{b}"),
    )


# ---- Sites ----------------------------------------------------------------------------


async def create_site(
    conn: psycopg.AsyncConnection,
    edge_id: str,
    content: object,
    author: str,
    comment: str,
    restores: int | None = None,
) -> VersionInfo:
    """A new version of the edge's site; NotFound for an edge without an identity in force,
    InvalidContent for a site the edge would refuse."""
    await edge_in_force(conn, edge_id)
    check_site(edge_id, content)
    action = "rolled_back" if restores is not None else "site_created"
    detail = f"restores version {restores}: {comment}" if restores is not None else comment
    return await _new_version(
        conn, "site", edge_id, canonical_content(content), author, comment, action, detail, restores
    )


async def edge_in_force(conn: psycopg.AsyncConnection, edge_id: str) -> None:
    """NotFound for an edge without a broker identity in force (it cannot connect)."""
    if not await _scalar_bool(conn, _EDGE_IN_FORCE, {"edge": edge_id}):
        raise NotFound(
            f"edge {edge_id!r} has no broker identity in force: register it first "
            f"(`tracectl edge add {edge_id}`), so that it can connect to the broker"
        )


async def _scalar_bool(conn: psycopg.AsyncConnection, sql: str, params: dict[str, Any]) -> bool:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return bool(row and row[0])


async def rollback(
    conn: psycopg.AsyncConnection, edge_id: str, to_version: int, author: str, comment: str
) -> VersionInfo:
    """A new version with the content of `to_version` (never an edit of history)."""
    earlier = await version_content(conn, "site", edge_id, to_version)
    return await create_site(
        conn, edge_id, earlier.content, author, comment or f"rollback to {to_version}", to_version
    )


Publish = Callable[[str, str], Awaitable[None]]  # (topic, payload): retained, QoS 1


def mqtt_publisher(broker: BrokerSettings, timeout_s: float) -> Publish:
    """Publishes on a connection of its own for each push (pushes are rare; a held
    connection would be one more session to supervise)."""

    async def publish(topic: str, payload: str) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                async with aiomqtt.Client(
                    **broker.client_args(),  # type: ignore[arg-type]
                    identifier=broker.username,
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as client:
                    await client.publish(topic, payload, qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError) as err:
            raise PushFailed(
                f"the broker did not take the push ({type(err).__name__}: {err}): is it "
                f"running, and is {broker.username!r} a collector identity in force?"
            ) from err

    return publish


async def push(
    conn: psycopg.AsyncConnection, edge_id: str, version: int, author: str, publish: Publish
) -> VersionInfo:
    """Publish the version to its edge (retained) and record the push."""
    found = await version_content(conn, "site", edge_id, version)
    cur = await conn.execute(
        "select content from site_versions where edge_id = %(name)s and version = %(version)s",
        {"name": edge_id, "version": version},
    )
    row = await cur.fetchone()
    assert row is not None
    message = SitePush(
        edge_id=edge_id,
        version=version,
        sha256=found.sha256,
        author=found.author[:128] or "unknown",
        comment=found.comment[:2000],
        published_at=datetime.now(UTC),
        restores=found.restores,
        content=row[0],
    )
    await publish(topics.config_site(edge_id), message.model_dump_json(exclude_none=True))
    async with conn.transaction():
        await conn.execute(_PUSHED, {"name": edge_id, "version": version})
        await audit(conn, author, "pushed", "site", edge_id, version, f"sha256 {found.sha256}")
    return await versions_of(conn, edge_id, version)


async def versions_of(conn: psycopg.AsyncConnection, edge_id: str, version: int) -> VersionInfo:
    found = await version_content(conn, "site", edge_id, version)
    return VersionInfo.model_validate(found.model_dump(exclude={"content"}))


async def record_edge_report(conn: psycopg.AsyncConnection, status: EdgeStatus) -> None:
    """What the edge's status says it applied or refused, once per (edge, version)."""
    state = status.site_config
    if state is None:
        return
    if state.version is not None:
        restarted = ", ".join(state.restarted) or "none"
        await audit(
            conn,
            status.edge_id,
            "applied",
            "site",
            status.edge_id,
            state.version,
            f"sha256 {state.sha256}; devices restarted: {restarted}"
            + (f"; moved: {', '.join(state.moved)}" if state.moved else ""),
        )
    if state.refused_version is not None:
        await audit(
            conn,
            status.edge_id,
            "refused",
            "site",
            status.edge_id,
            state.refused_version,
            state.refused_reason or "",
        )
