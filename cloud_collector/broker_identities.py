"""Who may connect to the MQTT broker, and what each may do there: the registry of broker
identities, and the Mosquitto files rendered from it.

**Identities.** One per edge agent (its username is its edge id) and one per collector
process (each collector instance has its own: the broker runs with
`use_username_as_clientid`, so an identity is also the one MQTT session it may hold, and
no client can take over another's client id). A password is 24 random bytes, shown once
when it is issued; the registry keeps only its Mosquitto `$7$` hash (PBKDF2-SHA512).

**What each kind may do** (`RULES`, rendered into the ACL file):

- an edge publishes only its own data, status and probe results, and reads only its own
  acks, the configuration pushed to it, the probes asked of it, the collectors' status and
  the lots on hold (`trace/v1/holds`, one set for all);
- a collector reads every edge's data (through the shared subscription) and status,
  publishes the acks, the lots on hold, the configuration pushed to edges and the probes
  asked of them (no edge may publish there), and its own status (under its identity's
  name, which the broker also makes its client id).

**Files.** `update_broker` renders the password file and the ACL file from the identities
in force (plus the `base_*` files, for identities the registry does not hold), writes
each atomically with the owner, group and mode the broker needs to read it, and sends the
broker SIGHUP, on which Mosquitto re-reads both and disconnects clients whose identity is
gone. An advisory lock serialises renderers, so the last file written is never a stale
snapshot.

**Ingest.** `accepts_edge` says whether the collector takes data from an edge: any edge
while no edge identity has ever been registered (a site that has not turned the registry
on yet), afterwards only edges registered and not revoked.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import signal
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocols.mqtt import topics
from protocols.mqtt.connection import ENV_FILE


class IdentityKind(StrEnum):
    edge = "edge"
    collector = "collector"


# What an identity of each kind may do: (access, topic filter), `{name}` its username.
RULES: dict[IdentityKind, tuple[tuple[str, str], ...]] = {
    IdentityKind.edge: (
        ("write", topics.data("{name}", "+")),
        ("write", topics.status("{name}")),
        ("read", topics.ack("{name}")),
        ("read", topics.config("{name}") + "/#"),
        ("read", topics.all_collector_status()),
        ("read", topics.holds()),
        # Probes a collector asks of this edge, and what it found (edge_agent/probes.py).
        ("read", topics.probe_request("{name}")),
        ("write", topics.probe_result("{name}")),
    ),
    IdentityKind.collector: (
        ("read", topics.all_data()),
        ("read", topics.status("+")),
        ("write", topics.ack("+")),
        ("write", topics.collector_status("{name}")),
        ("write", topics.holds()),
        # Site configuration versions pushed to edges (cloud_collector/provisioning.py).
        ("write", topics.config("+") + "/#"),
        # Probes through an edge (cloud_collector/edge_probes.py): no edge may ask one.
        ("write", topics.probe_request("+")),
        ("read", topics.probe_result("+")),
    ),
}

# A username is a topic level (an edge's) and a password-file field: no '/', '+', '#',
# ':' or white space. An edge id the site file allows but this does not (':') cannot
# have an identity; the error says so.
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HASH = re.compile(r"^\$7\$([0-9]+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")
# mosquitto_passwd's own choices (Mosquitto 2.0): 12 salt bytes, 101 PBKDF2 rounds. The
# rounds protect guessable passwords; ours are 192 random bits, which no rounds improve.
_SALT_BYTES = 12
_ROUNDS = 101
_LOCK_KEY = 7_204_016  # serialises renderers of the broker files across processes
_MODE = 0o640  # the broker's group reads; nobody else


class BrokerIdentityError(ValueError):
    """An identity cannot be issued, revoked or rendered as asked; the message says why and
    the fix."""


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BrokerIdentityError(
            f"{name!r} cannot be a broker identity: use 1-64 letters, digits, '.', '_' or "
            "'-' (it is an MQTT username and, for an edge, its topic level; rename the edge "
            "id in its site file if it holds other characters)"
        )
    return name


def password_hash(password: str, salt: bytes | None = None, rounds: int = _ROUNDS) -> str:
    """The `$7$` hash Mosquitto 2 checks a password against (as mosquitto_passwd makes)."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds, 64)
    return f"$7${rounds}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_matches(password: str, hashed: str) -> bool:
    m = _HASH.match(hashed)
    if m is None:
        return False
    try:
        salt = base64.b64decode(m.group(2), validate=True)
    except ValueError:  # binascii.Error: bad padding
        return False
    return secrets.compare_digest(password_hash(password, salt, int(m.group(1))), hashed)


@dataclass(frozen=True)
class IssuedIdentity:
    name: str
    kind: IdentityKind
    password: str = field(repr=False)  # shown once; only its hash is stored


@dataclass(frozen=True)
class BrokerIdentity:
    name: str
    kind: IdentityKind
    password_hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    comment: str | None = None


_ISSUE = """
insert into broker_identities (name, kind, password_hash, comment)
values (%(name)s, %(kind)s, %(hash)s, %(comment)s)
"""
_REVOKE = """
update broker_identities set revoked_at = now()
where name = %(name)s and revoked_at is null and (%(kind)s::text is null or kind = %(kind)s)
returning kind
"""
_IN_FORCE = """
select kind from broker_identities where name = %(name)s and revoked_at is null
"""
_LIST = """
select name, kind, password_hash, created_at, revoked_at, comment
from broker_identities
where %(revoked)s or revoked_at is null
order by kind, name, created_at
"""
# Once any edge identity exists, the registry is in use: only edges in force are accepted.
_ACCEPTS_EDGE = """
select not exists (select 1 from broker_identities where kind = 'edge')
    or exists (select 1 from broker_identities
               where kind = 'edge' and name = %(edge)s and revoked_at is null)
"""


async def issue(
    conn: AsyncConnection,
    name: str,
    kind: IdentityKind,
    comment: str | None = None,
    rotate: bool = False,
) -> IssuedIdentity:
    """A new identity with a random password; with `rotate`, the identity in force under
    `name` (same kind) is revoked in the same transaction and replaced."""
    check_name(name)
    password = secrets.token_urlsafe(24)
    async with conn.transaction():
        cur = await conn.execute(_IN_FORCE, {"name": name})
        row = await cur.fetchone()
        if row is not None:
            if row[0] != kind:
                raise BrokerIdentityError(
                    f"{name!r} is a {row[0]} identity in force, not a {kind} one: a name is "
                    "one username, whatever its kind; pick another name"
                )
            if not rotate:
                raise BrokerIdentityError(
                    f"{kind} identity {name!r} is in force already: revoke it first, or "
                    "rotate its password (--rotate)"
                )
            await conn.execute(_REVOKE, {"name": name, "kind": str(kind)})
        try:
            await conn.execute(
                _ISSUE,
                {
                    "name": name,
                    "kind": str(kind),
                    "hash": password_hash(password),
                    "comment": comment,
                },
            )
        except UniqueViolation as err:  # issued by someone else in between
            raise BrokerIdentityError(f"identity {name!r} was just issued elsewhere") from err
    return IssuedIdentity(name, kind, password)


async def revoke(conn: AsyncConnection, name: str, kind: IdentityKind | None = None) -> bool:
    """Revoke the identity in force under `name` (of `kind`, if given); False if none."""
    cur = await conn.execute(_REVOKE, {"name": name, "kind": None if kind is None else str(kind)})
    return await cur.fetchone() is not None


async def list_identities(conn: AsyncConnection, revoked: bool = False) -> list[BrokerIdentity]:
    cur = await conn.execute(_LIST, {"revoked": revoked})
    return [
        BrokerIdentity(r[0], IdentityKind(r[1]), r[2], r[3], r[4], r[5])
        for r in await cur.fetchall()
    ]


async def accepts_edge(conn: AsyncConnection, edge_id: str) -> bool:
    """Whether the collector takes data from `edge_id` (see the module's docstring)."""
    cur = await conn.execute(_ACCEPTS_EDGE, {"edge": edge_id})
    row = await cur.fetchone()
    return bool(row and row[0])


# ---- The broker's files -----------------------------------------------------------------


class BrokerFiles(BaseSettings):
    """Where the broker on this host reads its identities (TRACE_BROKER_*). Unset: the
    registry changes, and `tracectl broker files` on the broker's host renders them."""

    model_config = SettingsConfigDict(env_prefix="TRACE_BROKER_", env_file=ENV_FILE, extra="ignore")

    password_file: Path | None = None
    acl_file: Path | None = None
    # The broker's pid file: it gets SIGHUP after the files change. Unset: reload it yourself.
    pid_file: Path | None = None
    # Identities the registry does not hold (e.g. the local services' own collector), in
    # Mosquitto's formats, copied ahead of the registry's.
    base_password_file: Path | None = None
    base_acl_file: Path | None = None

    @property
    def configured(self) -> bool:
        return self.password_file is not None and self.acl_file is not None


def _header(what: str) -> str:
    return (
        f"# Mosquitto {what}, rendered {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} from the broker "
        "identity registry\n# (cloud_collector/broker_identities.py). Do not edit: change the "
        "registry with `tracectl edge` / `tracectl broker`.\n"
    )


def _base_names(base_passwords: str, where: Path | None) -> list[str]:
    names = []
    for number, line in enumerate(base_passwords.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, hashed = line.partition(":")
        if not NAME.match(name) or not _HASH.match(hashed):
            raise BrokerIdentityError(
                f"{where}:{number}: not a Mosquitto 2 password line (NAME:$7$...); make it "
                "with mosquitto_passwd"
            )
        names.append(name)
    return names


def render_password_file(
    identities: Iterable[BrokerIdentity], base: str = "", base_path: Path | None = None
) -> str:
    """The password file: the base file's lines, then each identity in force."""
    taken = set(_base_names(base, base_path))
    lines = [_header("password file")]
    if base.strip():
        lines.append(f"# from {base_path}\n{base.rstrip()}\n# from the registry\n")
    for identity in identities:
        if identity.revoked_at is not None:
            continue
        if identity.name in taken:
            raise BrokerIdentityError(
                f"identity {identity.name!r} is in the registry and in {base_path}: "
                "remove it from one of them"
            )
        lines.append(f"{identity.name}:{identity.password_hash}\n")
    return "".join(lines)


def acl_rules(name: str, kind: IdentityKind) -> list[str]:
    return [f"topic {access} {topic.format(name=name)}" for access, topic in RULES[kind]]


def render_acl_file(identities: Iterable[BrokerIdentity], base: str = "") -> str:
    """The ACL file: the base file, then one `user` block per identity in force. A client
    whose username has no block may do nothing."""
    parts = [_header("ACL file")]
    if base.strip():
        parts.append(base.rstrip() + "\n")
    for identity in identities:
        if identity.revoked_at is None:
            rules = "\n".join(acl_rules(identity.name, identity.kind))
            parts.append(f"\n# {identity.kind}\nuser {identity.name}\n{rules}\n")
    return "".join(parts)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step (a reader sees the old file or the new one, never half),
    keeping the owner, group and mode of the file it replaces (the broker, often running
    as its own user, must still read it); a new file gets mode 0640 and the folder's group."""
    try:
        st = path.stat()
        uid, gid, mode = st.st_uid, st.st_gid, (st.st_mode & 0o660) or _MODE
    except FileNotFoundError:
        st = path.parent.stat()
        uid, gid, mode = os.geteuid(), st.st_gid, _MODE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), uid, gid)
            else:  # keep at least the group the broker reads through, when we belong to it
                with contextlib.suppress(PermissionError):
                    os.fchown(f.fileno(), -1, gid)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def reload_broker(pid_file: Path) -> int:
    """Send the broker SIGHUP (it re-reads the password and ACL files); its pid."""
    try:
        pid = int(pid_file.read_text().strip())
    except FileNotFoundError as err:
        raise BrokerIdentityError(
            f"broker pid file {pid_file} does not exist: is the broker running? (or unset "
            "TRACE_BROKER_PID_FILE and reload it yourself)"
        ) from err
    except ValueError as err:
        raise BrokerIdentityError(f"broker pid file {pid_file} holds no pid") from err
    comm = Path(f"/proc/{pid}/comm")
    # A stale pid file may name an unrelated process by now: never signal that one.
    if comm.exists() and "mosquitto" not in comm.read_text():
        raise BrokerIdentityError(
            f"pid {pid} in {pid_file} is not a mosquitto process: the file is stale; "
            "start the broker or fix TRACE_BROKER_PID_FILE"
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as err:
        raise BrokerIdentityError(
            f"no process {pid} (from {pid_file}): is the broker running?"
        ) from err
    except PermissionError as err:
        raise BrokerIdentityError(
            f"not allowed to signal the broker (pid {pid}): run as its user or as root"
        ) from err
    return pid


@dataclass(frozen=True)
class BrokerUpdate:
    identities: int  # in force, rendered
    password_file: Path
    acl_file: Path
    reloaded_pid: int | None


def _read_base(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text()
    except FileNotFoundError as err:
        raise BrokerIdentityError(f"base file {path} does not exist (TRACE_BROKER_BASE_*)") from err


def render(identities: Sequence[BrokerIdentity], files: BrokerFiles) -> tuple[str, str]:
    """(password file, ACL file) for `identities` with the base files of `files`."""
    passwords = render_password_file(
        identities, _read_base(files.base_password_file), files.base_password_file
    )
    return passwords, render_acl_file(identities, _read_base(files.base_acl_file))


async def update_broker(conn: AsyncConnection, files: BrokerFiles) -> BrokerUpdate:
    """Render the broker's files from the registry, write them, and reload the broker."""
    if files.password_file is None or files.acl_file is None:
        raise BrokerIdentityError(
            "set TRACE_BROKER_PASSWORD_FILE and TRACE_BROKER_ACL_FILE to the files the "
            "broker's configuration names (password_file, acl_file)"
        )
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        identities = await list_identities(conn)
        passwords, acl = render(identities, files)
        # ACL first: a new identity is never let in before its rules exist.
        write_atomically(files.acl_file, acl)
        write_atomically(files.password_file, passwords)
        pid = reload_broker(files.pid_file) if files.pid_file is not None else None
    return BrokerUpdate(len(identities), files.password_file, files.acl_file, pid)
