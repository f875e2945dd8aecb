"""Where alerts go: webhooks and e-mail recipients, each narrowed to some kinds and lines.

A webhook's secret signs every body it is sent (delivery.py): the admin gives it, or the
collector makes one and shows it once, in the answer that creates the target; it is never
listed again. A new target gets the alerts raised after it exists.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.rows import dict_row
from pydantic import AfterValidator, AnyHttpUrl, Field, model_validator

from cloud_collector.alerts.rules import Names, Word
from protocols.mqtt.contract import storable
from protocols.strict import Strict

Channel = Literal["webhook", "email"]
# An address as SMTP takes it: no spaces, no line breaks (a header injected through an
# address would be someone else's mail).
Address = Annotated[
    str,
    Field(min_length=3, max_length=254, pattern=r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+$"),
    AfterValidator(storable),
]
Secret = Annotated[str, Field(min_length=16, max_length=200), AfterValidator(storable)]
Kinds = Annotated[
    list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]],
    Field(min_length=1, max_length=100),
]


class TargetRequest(Strict):
    name: Word
    channel: Channel
    # webhook: where the alert is POSTed, and the secret its signature is made with (at
    # least 16 characters; left out: the collector makes one and answers it once).
    url: AnyHttpUrl | None = None
    secret: Secret | None = None
    # email: who gets it.
    email_to: Annotated[list[Address], Field(min_length=1, max_length=100)] | None = None
    kinds: Kinds | None = None  # left out: alerts of every kind, new kinds included
    lines: Names | None = None  # left out: of every line, and alerts of no line
    max_attempts: int = Field(default=8, ge=1, le=100)
    enabled: bool = True

    @model_validator(mode="after")
    def _channel_has_its_address(self) -> TargetRequest:
        if self.channel == "webhook" and (self.url is None or self.email_to is not None):
            raise ValueError("a webhook target needs `url` (and no `email_to`)")
        if self.channel == "email" and (self.email_to is None or self.url or self.secret):
            raise ValueError("an email target needs `email_to` (and no `url` or `secret`)")
        if self.url is not None and len(str(self.url)) > 2000:
            raise ValueError("url is longer than 2000 characters")
        return self


class Target(Strict):
    target_id: int
    name: str
    channel: Channel
    url: str | None
    email_to: list[str] | None
    kinds: list[str] | None
    lines: list[str] | None
    max_attempts: int
    enabled: bool
    created_by: str
    created_at: datetime


class CreatedTarget(Target):
    secret: str | None  # the webhook's signing secret: shown here only


class NameTaken(Exception):
    pass


_COLUMNS = """target_id, name, channel, url, email_to, kinds, lines, max_attempts, enabled,
created_by, created_at"""
_CREATE = f"""
insert into alert_targets (name, channel, url, secret, email_to, kinds, lines, max_attempts,
    enabled, created_by)
values (%(name)s, %(channel)s, %(url)s, %(secret)s, %(email_to)s, %(kinds)s, %(lines)s,
    %(max_attempts)s, %(enabled)s, %(by)s)
returning {_COLUMNS}, secret
"""
_LIST = f"select {_COLUMNS} from alert_targets order by target_id"
_DELETE = "delete from alert_targets where target_id = %(target)s"


async def create(conn: AsyncConnection, body: TargetRequest, by: str) -> CreatedTarget:
    secret = body.secret
    if body.channel == "webhook" and secret is None:
        secret = secrets.token_urlsafe(32)
    params: dict[str, Any] = {
        **body.model_dump(exclude={"secret", "url"}),
        "url": None if body.url is None else str(body.url),
        "secret": secret,
        "by": by,
    }
    cur = conn.cursor(row_factory=dict_row)
    try:
        row = await (await cur.execute(_CREATE, params)).fetchone()
    except UniqueViolation as err:
        raise NameTaken(f"an alert target named {body.name!r} exists: pick another name") from err
    assert row is not None  # an insert returns its row
    return CreatedTarget(**row)


async def targets(conn: AsyncConnection) -> list[Target]:
    cur = conn.cursor(row_factory=dict_row)
    return [Target(**r) for r in await (await cur.execute(_LIST)).fetchall()]


async def delete(conn: AsyncConnection, target_id: int) -> bool:
    """Delete the target and its deliveries (sent, waiting and dead)."""
    cur = await conn.execute(_DELETE, {"target": target_id})
    return cur.rowcount == 1
