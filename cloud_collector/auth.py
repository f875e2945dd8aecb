"""Who may call the collector's HTTP API, and what a distributor (partner) may see.

**Keys.** An API key is 32 random bytes (`lt_` + URL-safe base64), shown once when it is
issued and stored only as its SHA-256 (a hash of a random 256-bit token needs no salt or
slow KDF: there is nothing to guess). A request presents it as `Authorization: Bearer KEY`
or `X-API-Key: KEY`. Missing, unknown or revoked: 401 with `WWW-Authenticate`; a key whose
role does not fit the route: 403 naming the role needed. Each request's key is checked by the
app's `Keyring` (below) before the route takes a connection of its own, so a bogus key never
holds one. Keys are issued with
`tracectl credential add` (straight into the database, so a fresh install needs no key to
make its first one) or by an admin over `POST /api/v1/credentials`.

**Page sessions.** The pages (cloud_collector/pages/) sign in with a key and keep a session
token in a cookie (`SESSION_COOKIE`), stored as its SHA-256 like a key; `require` accepts
it in place of the header, with the key's role and partner, looked up by a second
`Keyring` (`sessions=True`). A request with a session that changes something must carry
`csrf_token(session)` in `CSRF_HEADER`.

**Roles** (`ROLES` below): each route names the roles it accepts; `admin` passes every
check. Roles do not include one another otherwise: an ERP integration's `importer` key
cannot read traces, a `reader` key cannot change what the traces say.

**Partners, for the EPCIS module.** A `partner` key stands for one distributor
(`Principal.partner`, loaded with the key, so the checks below cost no query):

- `Partner.may_capture_at(location)` / `Partner.may_capture_event(read_point, biz_location)`:
  may it capture an event there. Its locations are GLNs (any sub-location of the GLN
  matches), SGLNs (`urn:epc:id:sgln:...` or Digital Link `.../414/GLN/254/EXT`; extension
  `0` means the whole GLN) and read point ids (matched exactly).
- `SHIPPED_TO_PARTNER_SQL` (a subquery on `%(partner_id)s` selecting `event_id, lot_id`):
  our shipment lines (our edges, or a capture with our own keys: never a partner's capture)
  whose shipment the ERP says went to one of its customer ids. The EPCIS query shows a
  partner those shipping events (and what it captured itself); `visible_lots()` lists the
  lots they carry, for operators and tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import psycopg
from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel

from protocols import gs1


class Role(StrEnum):
    reader = "reader"
    provisioner = "provisioner"
    importer = "importer"
    admin = "admin"
    partner = "partner"
    quality = "quality"


# What each role is for (routes name the roles they accept; admin passes every check).
ROLES: dict[Role, str] = {
    Role.reader: "traces, recalls, recall by condition, batch parameters, exports, EPCIS query",
    Role.provisioner: "device profiles and site configurations: new versions, pushes to edges, "
    "rollbacks (/api/v1/provisioning)",
    Role.importer: "ERP imports (products, customers, shipments, purchase orders), QC "
    "results, EPCIS capture of our own systems",
    Role.admin: "everything, and credentials (GET/POST/DELETE /api/v1/credentials)",
    Role.quality: "holds: put lots on hold and release them; list holds and alerts; recall "
    "cases and drills: open, record on, close (/api/v1/recall-cases)",
    Role.partner: "a distributor: EPCIS capture at its own locations, and queries only about "
    "lots shipped to it",
}

KEY_PREFIX = "lt_"
_SHOWN_PREFIX = 10  # characters of a key kept in clear to recognise it in a list


class CredentialError(ValueError):
    """A credential cannot be issued or revoked as asked; the message says why and the fix."""


class CredentialInForce(CredentialError):
    """A credential of that name is in force already (HTTP 409)."""


# ---- Partners ------------------------------------------------------------------------


def _location(text: str) -> tuple[str, str | None] | str:
    """A GLN location as (gln, extension or None for the whole GLN): a GLN, an SGLN URN or
    a Digital Link of a GLN (with or without its host, the GS1 module's one rule); anything
    else as the stripped text, compared exactly."""
    text = text.strip()
    if gs1.digits(text) and len(text) == 13:
        return text, None
    key = gs1.from_urn(text) if text.startswith("urn:") else gs1.from_digital_link(text)
    if key and key.kind in ("gln", "sgln") and key.gln:
        return key.gln, key.extension
    return text


def location_gln(text: str) -> str | None:
    """The GLN a partner location names, in any form `_location` reads; None for an id
    compared as text."""
    where = _location(text)
    return None if isinstance(where, str) else where[0]


def check_location(text: str) -> str:
    """A partner location as it will be stored; CredentialError if it cannot be one."""
    text = text.strip()
    if not text:
        raise CredentialError("a partner location cannot be empty")
    if gs1.digits(text) and len(text) == 13 and not gs1.valid(text):
        raise CredentialError(
            f"GLN {text} has a wrong check digit (it should end in {gs1.check_digit(text[:12])})"
        )
    if text.startswith("urn:epc:id:sgln:") and isinstance(_location(text), str):
        raise CredentialError(
            f"{text} is not an SGLN: urn:epc:id:sgln:COMPANYPREFIX.LOCATIONREF.EXTENSION, "
            "prefix and reference 12 digits together"
        )
    return text


@dataclass(frozen=True)
class Partner:
    """A distributor behind a `partner` key: its ERP customer ids and its locations."""

    partner_id: str
    customer_ids: frozenset[str]
    locations: tuple[str, ...]

    def may_capture_at(self, location: str | None) -> bool:
        """Whether `location` (a read point or business location id as an event carries
        it) is one of the partner's: the same GLN (an allowed GLN or SGLN with extension 0
        covers all its sub-locations), the same SGLN, or the same id."""
        if not location:
            return False
        where = _location(location)
        for allowed in map(_location, self.locations):
            if isinstance(allowed, str) or isinstance(where, str):
                if allowed == where:
                    return True
            elif allowed[0] == where[0] and allowed[1] in (None, where[1]):
                return True
        return False

    def may_capture_event(self, *locations: str | None) -> bool:
        """An event (its readPoint and bizLocation) may be captured when it names at least
        one location and every location it names is the partner's."""
        named = [x for x in locations if x]
        return bool(named) and all(self.may_capture_at(x) for x in named)


# Our shipments to a partner: the lines (event_id, lot_id) of shipping events we recorded
# (our edges', or captured with our own keys) whose shipment the ERP says went to one of
# its customer ids. A partner's own shipping events are in the genealogy (a distributor
# shipping on to its customers is part of the forward trace) but never here: naming one of
# our lots in a shipment of its own must not make the lot its to see.
# One placeholder, %(partner_id)s, and no other `%`: callers may embed it as a subquery.
SHIPPED_TO_PARTNER_SQL = """
select sl.event_id, sl.lot_id
from shipment_lines sl
join trace_events t on t.event_id = sl.event_id and t.partner_id is null
join shipments s on s.shipment = sl.shipment
join partner_customers pc on pc.customer_id = s.customer_id
where pc.partner_id = %(partner_id)s
"""

# Lots a partner may see: those on our shipments to it. Their forward descendants are NOT
# included: a shipped lot's descendants recorded here are either our own products made
# from the rest of the lot (our business, not the distributor's) or what the partner made
# itself, which it sees through the events it captured. Ancestors are not included either
# (our suppliers are not theirs to know). The same single placeholder.
VISIBLE_LOTS_SQL = f"""
select distinct shipped.lot_id from ({SHIPPED_TO_PARTNER_SQL}) shipped
where shipped.lot_id is not null
"""

_VISIBLE_LOTS = f"""
select l.lot_id, l.gtin, l.lot_code
from lots l where l.lot_id in ({VISIBLE_LOTS_SQL})
order by l.gtin, l.lot_code
"""


class VisibleLot(BaseModel):
    lot_id: int
    gtin: str
    lot_code: str


async def visible_lots(conn: AsyncConnection, partner_id: str) -> list[VisibleLot]:
    """The lots partner `partner_id` may see (see VISIBLE_LOTS_SQL)."""
    cur = await conn.execute(_VISIBLE_LOTS, {"partner_id": partner_id})
    return [VisibleLot(lot_id=r[0], gtin=r[1], lot_code=r[2]) for r in await cur.fetchall()]


_PARTNER = """
select p.partner_id,
       coalesce((select array_agg(customer_id order by customer_id)
                 from partner_customers where partner_id = p.partner_id), '{}'),
       coalesce((select array_agg(location order by location)
                 from partner_locations where partner_id = p.partner_id), '{}')
from partners p where p.partner_id = %s
"""


async def load_partner(conn: AsyncConnection, partner_id: str) -> Partner | None:
    row = await (await conn.execute(_PARTNER, (partner_id,))).fetchone()
    if row is None:
        return None
    return Partner(row[0], frozenset(row[1]), tuple(row[2]))


async def set_partner(
    conn: AsyncConnection,
    partner_id: str,
    customer_ids: Iterable[str] = (),
    locations: Iterable[str] = (),
    name: str | None = None,
) -> Partner:
    """Create the partner if new and add customer ids and locations (nothing is removed)."""
    if not partner_id.strip():
        raise CredentialError("a partner id cannot be empty")
    checked = [check_location(x) for x in locations]
    await conn.execute(
        "insert into partners (partner_id, name) values (%s, %s) on conflict (partner_id)"
        " do update set name = coalesce(excluded.name, partners.name)",
        (partner_id, name),
    )
    for customer in customer_ids:
        await conn.execute(
            "insert into partner_customers values (%s, %s) on conflict do nothing",
            (partner_id, customer.strip()),
        )
    for location in checked:
        await conn.execute(
            "insert into partner_locations values (%s, %s) on conflict do nothing",
            (partner_id, location),
        )
    partner = await load_partner(conn, partner_id)
    assert partner is not None
    return partner


# ---- Credentials ---------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is calling: the credential's name and role, and for a partner key its partner."""

    credential_id: int
    name: str
    role: Role
    partner: Partner | None = None

    @property
    def partner_id(self) -> str | None:
        """The partner a partner key stands for; None for our own keys."""
        return self.partner.partner_id if self.partner else None


class Credential(BaseModel):
    """A credential as listed: never the key, only its first characters."""

    name: str
    role: Role
    key_prefix: str
    partner_id: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class IssuedKey(BaseModel):
    name: str
    role: Role
    partner_id: str | None
    key: str  # shown once


def new_key() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


_INSERT = """
insert into api_credentials (name, role, key_hash, key_prefix, partner_id)
values (%s, %s, %s, %s, %s)
"""
_REVOKE = "update api_credentials set revoked_at = now() where name = %s and revoked_at is null"
_LIST = """
select name, role, key_prefix, partner_id, created_at, revoked_at, last_used_at
from api_credentials where %s or revoked_at is null
order by name, created_at
"""
_BY_HASHES = """
select key_hash, credential_id, name, role, partner_id,
       last_used_at is null or last_used_at < now() - interval '60 seconds'
from api_credentials where key_hash = any(%s) and revoked_at is null
"""
# A page session (cloud_collector/pages/session.py) stands for the credential that opened
# it, while neither has ended: revoking the key ends its sessions too.
_SESSIONS_BY_HASHES = """
select s.token_hash, c.credential_id, c.name, c.role, c.partner_id
from page_sessions s join api_credentials c using (credential_id)
where s.token_hash = any(%s) and s.expires_at > now() and s.signed_out_at is null
  and c.revoked_at is null
"""
# At most one write per key per minute, however busy the key.
_TOUCH = "update api_credentials set last_used_at = now() where credential_id = %s"


async def issue(
    conn: AsyncConnection,
    name: str,
    role: Role,
    partner_id: str | None = None,
    replace: bool = False,
) -> IssuedKey:
    """A new key for `name`; with `replace`, the credential in force under that name is
    revoked in the same transaction. A partner key needs its partner set up first
    (`set_partner`)."""
    if not name.strip():
        raise CredentialError("a credential needs a name (who or what uses it)")
    if (role is Role.partner) != (partner_id is not None):
        raise CredentialError(
            "a partner credential needs a partner id (--partner ID: the distributor it stands for)"
            if role is Role.partner
            else f"a partner id (--partner) is only for role partner, not {role}"
        )
    key = new_key()
    async with conn.transaction():
        if partner_id is not None and await load_partner(conn, partner_id) is None:
            raise CredentialError(f"partner {partner_id!r} is unknown: set it up first")
        if replace:
            await conn.execute(_REVOKE, (name,))
        try:
            await conn.execute(
                _INSERT, (name, role.value, key_hash(key), key[:_SHOWN_PREFIX], partner_id)
            )
        except UniqueViolation as err:
            raise CredentialInForce(
                f"a credential named {name!r} is in force: revoke it first "
                f"(tracectl credential revoke {name}) or choose another name"
            ) from err
    return IssuedKey(name=name, role=role, partner_id=partner_id, key=key)


async def revoke(conn: AsyncConnection, name: str) -> bool:
    """Revoke the credential in force named `name`; False if there is none."""
    cur = await conn.execute(_REVOKE, (name,))
    return cur.rowcount > 0


async def list_credentials(conn: AsyncConnection, revoked: bool = False) -> list[Credential]:
    cur = await conn.execute(_LIST, (revoked,))
    return [
        Credential(
            name=r[0],
            role=Role(r[1]),
            key_prefix=r[2],
            partner_id=r[3],
            created_at=r[4],
            revoked_at=r[5],
            last_used_at=r[6],
        )
        for r in await cur.fetchall()
    ]


async def authenticate(conn: AsyncConnection, key: str) -> Principal | None:
    """The principal a key stands for, or None if it is unknown or revoked. The lookup is by
    the key's SHA-256, an exact index match: there is no secret compared byte by byte here
    whose timing could leak (the hash of a random 256-bit key reveals nothing to guess)."""
    digest = key_hash(key)
    return (await _authenticate(conn, [digest])).get(digest)


async def _authenticate(conn: AsyncConnection, digests: list[bytes]) -> dict[bytes, Principal]:
    """The principals of those of `digests` (key hashes) that are in force, in one query."""
    rows = await (await conn.execute(_BY_HASHES, (digests,))).fetchall()
    found = {}
    for digest, credential_id, name, role, partner_id, stale in rows:
        if stale:
            await conn.execute(_TOUCH, (credential_id,))
        partner = await load_partner(conn, partner_id) if partner_id is not None else None
        found[bytes(digest)] = Principal(credential_id, name, Role(role), partner)
    return found


async def _session_principals(
    conn: AsyncConnection, digests: list[bytes]
) -> dict[bytes, Principal]:
    """The principals of those of `digests` (session token hashes) that are in force."""
    rows = await (await conn.execute(_SESSIONS_BY_HASHES, (digests,))).fetchall()
    found = {}
    for digest, credential_id, name, role, partner_id in rows:
        partner = await load_partner(conn, partner_id) if partner_id is not None else None
        found[bytes(digest)] = Principal(credential_id, name, Role(role), partner)
    return found


# ---- Keys checked per request ----------------------------------------------------------


class KeysUnavailable(Exception):
    """The database could not be asked about a key in time (HTTP 503: retry)."""


class Keyring:
    """Which principal each API key stands for, as the HTTP API asks it on every request.

    A key is looked up on a pool of its own (`pool`, shared only with /healthz), never on a
    connection the route will use: a request whose key is unknown holds no connection of
    the API's pool at any time, so no number of bogus keys can starve valid requests.

    - Each answer, found or not, is reused for `ttl_s` seconds: a key revoked elsewhere
      (tracectl, another collector) stops working within that time; `forget()` (called when
      this process issues or revokes a key) makes it at once. Unknown keys are remembered
      too, so a client retrying a bad key costs one lookup per `ttl_s`.
    - Lookups are batched: one task asks the database about every key waiting, up to
      `batch` at a time, in one query on one connection. A flood of random keys costs a
      few queries, not one each, and a valid key that arrives among them waits for one
      round trip, not behind every bogus one. A batch that cannot get its answer within
      `wait_s` fails its requests with 503.
    - At most `max_entries` answers are kept (the oldest go first): memory is bounded
      whatever keys are thrown at it.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        ttl_s: float = 5.0,
        wait_s: float = 5.0,
        batch: int = 1000,
        max_entries: int = 10_000,
        sessions: bool = False,
    ) -> None:
        self._pool = pool
        # The same cache and batching for the pages' session tokens (hashed like keys).
        self._lookup_by_hash = _session_principals if sessions else _authenticate
        self._ttl_s = ttl_s
        self._wait_s = wait_s
        self._batch = batch
        self._max_entries = max_entries
        self._answers: OrderedDict[bytes, tuple[float, Principal | None]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._waiting: list[bytes] = []  # pending digests not yet in a query
        self._lookup: asyncio.Task[None] | None = None
        self.lookups = 0  # database queries made, for /healthz and tests

    async def principal(self, key: str) -> Principal | None:
        """The principal `key` stands for, or None if it is unknown or revoked; raises
        KeysUnavailable when the database cannot say in time."""
        digest = key_hash(key)
        known = self._answers.get(digest)
        if known is not None and known[0] > time.monotonic():
            return known[1]
        pending = self._pending.get(digest)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._pending[digest] = pending
            self._waiting.append(digest)
            if self._lookup is None or self._lookup.done():
                self._lookup = asyncio.create_task(self._look_up_waiting())
        # shield: a client that goes away does not cancel the answer others wait for.
        return await asyncio.shield(pending)

    def forget(self) -> None:
        """Drop every remembered answer (a key was issued or revoked here)."""
        self._answers.clear()

    async def _look_up_waiting(self) -> None:
        while self._waiting:
            digests, self._waiting = self._waiting[: self._batch], self._waiting[self._batch :]
            try:
                self.lookups += 1
                async with asyncio.timeout(self._wait_s), self._pool.connection() as conn:
                    found = await self._lookup_by_hash(conn, digests)
            except (TimeoutError, PoolTimeout, psycopg.OperationalError) as err:
                unavailable = KeysUnavailable(
                    "the API key could not be checked: the database did not answer within "
                    f"{self._wait_s:g} s ({type(err).__name__}); retry shortly"
                )
                for digest in digests:
                    self._settle(digest, error=unavailable)
                continue
            except Exception as err:  # a bug: each waiter raises it (a 500), none hangs
                for digest in digests:
                    self._settle(digest, error=err)
                continue
            for digest in digests:
                self._remember(digest, found.get(digest))
                self._settle(digest, found.get(digest))

    def _settle(
        self, digest: bytes, found: Principal | None = None, error: Exception | None = None
    ) -> None:
        pending = self._pending.pop(digest, None)
        if pending is None or pending.done():
            return
        if error is not None:
            pending.set_exception(error)
            # Retrieved here too: a waiter that went away must not leave it unheard.
            pending.exception()
        else:
            pending.set_result(found)

    def _remember(self, digest: bytes, found: Principal | None) -> None:
        if self._ttl_s <= 0:
            return
        self._answers[digest] = (time.monotonic() + self._ttl_s, found)
        self._answers.move_to_end(digest)
        while len(self._answers) > self._max_entries:
            self._answers.popitem(last=False)


# ---- FastAPI -------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer KEY")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")
_CHALLENGE = 'Bearer realm="lot-trace"'

# The pages' session: a random token in an HttpOnly, SameSite=Strict cookie, stored as its
# SHA-256 like a key (cloud_collector/pages/session.py opens and ends it). A request that
# carries no key may carry the cookie instead; one that changes something (not GET, HEAD,
# OPTIONS) must then also send the session's CSRF token in X-CSRF-Token: a page of another
# site can make the browser send the cookie, never read the token.
SESSION_COOKIE = "lt_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session: str) -> str:
    """The CSRF token of a session: derived from its secret token (nothing more to store),
    and telling nothing about it."""
    return hmac.new(session.encode(), b"csrf", hashlib.sha256).hexdigest()


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = _CHALLENGE + (f', error="{error}"' if error else "")
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's Principal if its key is in force and its role is
    one of `roles` (admin always is); 401 or 403 otherwise."""
    accepted = frozenset(roles) | {Role.admin}
    wanted = " or ".join(sorted(accepted))

    async def principal(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        api_key: Annotated[str | None, Security(_api_key)],
    ) -> Principal:
        key = bearer.credentials if bearer is not None else api_key
        session = None if key else request.cookies.get(SESSION_COOKIE)
        if not key and not session:
            raise _unauthorized(
                "this needs an API key: send Authorization: Bearer KEY (or X-API-Key: KEY); "
                "an admin issues one with `tracectl credential add NAME --role ROLE`"
            )
        keyring: Keyring = request.app.state.sessions if session else request.app.state.keyring
        try:
            found = await keyring.principal(session or key or "")
        except KeysUnavailable as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "2"}) from err
        if found is None and session:
            raise _unauthorized(
                "the page session has expired, was signed out or its key was revoked: "
                "sign in again at /signin",
                "invalid_token",
            )
        if found is None:
            raise _unauthorized(
                "the API key is unknown or revoked: ask an admin for a new one "
                "(tracectl credential list shows those in force)",
                "invalid_token",
            )
        if (
            session
            and request.method not in _SAFE_METHODS
            and not hmac.compare_digest(
                request.headers.get(CSRF_HEADER, "").encode(), csrf_token(session).encode()
            )
        ):
            raise HTTPException(
                403,
                f"a request signed in by a page session must carry its {CSRF_HEADER} header "
                "(the pages send it): reload the page and try again",
            )
        if found.role not in accepted:
            raise HTTPException(
                403,
                f"this needs a credential with role {wanted}; {found.name!r} has role {found.role}",
            )
        # What endpoints.connection checks before it hands out a connection of the pool.
        request.state.principal = found
        return found

    principal.required_roles = accepted  # type: ignore[attr-defined]
    return principal
