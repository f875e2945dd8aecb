"""Holds: a lot under investigation that must not leave, put on hold and released by the
quality team (role `quality`; admin too), every change kept with who, when and why.

- `hold(lot, reason, by, downstream)`: one hold in force per lot (a second is a conflict,
  `AlreadyHeld`, naming the first). With `downstream`, every lot the trace's forward walk
  reaches from it is held too, each hold naming the one it came with (`origin_hold`); a
  descendant already held keeps its own hold and is listed as such.
- `release(lot, reason, by, downstream)`: ends the lot's hold in force (`NotHeld` if there
  is none); with `downstream`, also the holds that came with it. Released holds stay.
- Traces and recalls flag each lot on hold (cloud_collector/trace: rows.py, recall.py).
- The edges learn the set of held lots from one retained message on `trace/v1/holds`
  (contract `HoldSet`), published by `announce_holds` under a broker identity of its own
  (TRACE_HOLDS_USERNAME / TRACE_HOLDS_PASSWORD, kind collector: the broker ties one
  connection to an identity, so it cannot share the consumer's). It publishes whenever the
  set differs from what it last published: at once when this process's API changed a hold
  (`wake`), within `check_every_s` when another collector's did. Several collectors
  publishing the same set change nothing: the message is retained and whole.
- An edge that reads a held lot at a shipping door flags the event `held_lot`; storing such
  an event records an alert (the trigger of migration 0027, in the event's transaction),
  listed and delivered with the others (cloud_collector/alerts). A shipping event captured
  through /epcis/capture is checked by the same trigger (migration 0033): one that ships a
  held lot is flagged and alerted alike.
- A hold's `record()`: the hold, how many lots came with it, the alerts that named it.
  Everything downstream of a lot can be a hundred thousand lots: hold and release list a
  first page of them and count them all; `held_with` pages through the rest by lot id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import aiomqtt
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from pydantic import AfterValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_collector import trace
from cloud_collector.alerts.raised import COLUMNS as ALERT_COLUMNS
from cloud_collector.alerts.raised import Alert
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from protocols.mqtt.connection import ENV_FILE, BrokerSettings
from protocols.mqtt.contract import MAX_HELD_LOTS, MAX_HELD_UNITS, HeldLot, HoldSet, storable
from protocols.strict import Strict

log = logging.getLogger(__name__)

HoldState = Literal["in_force", "released", "all"]
# How many descendants' holds an answer lists at most unless asked for another page size.
PAGE = 100

_COLUMNS = """
h.hold_id, h.lot_id, l.gtin, l.lot_code, h.reason, h.held_by, h.held_at, h.origin_hold,
h.released_at, h.released_by, h.release_reason, h.released_at is null as in_force
"""

# `on conflict ... do nothing`: a lot held meanwhile by someone else is no second hold.
_HOLD = f"""
with put as (
    insert into lot_holds (lot_id, reason, held_by) values (%(lot)s, %(reason)s, %(by)s)
    on conflict (lot_id) where released_at is null do nothing
    returning *
)
select {_COLUMNS} from put h join lots l using (lot_id)
"""
# Everything downstream can be a hundred thousand lots: counted here, listed by pages.
_HOLD_MANY = """
with put as (
    insert into lot_holds (lot_id, reason, held_by, origin_hold)
    select x, %(reason)s, %(by)s, %(origin)s from unnest(%(lots)s::bigint[]) x
    on conflict (lot_id) where released_at is null do nothing
    returning 1
)
select count(*) from put
"""
_IN_FORCE_OF = f"""
select {_COLUMNS} from lot_holds h join lots l using (lot_id)
where h.lot_id = any(%(lots)s) and h.released_at is null order by h.lot_id
"""
# The descendants that kept a hold of their own (not the one that came with `origin`).
_HELD_APART = """
from lot_holds h join lots l using (lot_id)
where h.lot_id = any(%(lots)s) and h.released_at is null
  and h.origin_hold is distinct from %(origin)s
"""
_HELD_APART_PAGE = f"select {_COLUMNS} {_HELD_APART} order by h.lot_id limit %(limit)s"
_HELD_APART_COUNT = f"select count(*) {_HELD_APART}"
# The holds that came with `origin`, a page after lot `after`, by lot.
_CAME_WITH = f"""
select {_COLUMNS} from lot_holds h join lots l using (lot_id)
where h.origin_hold = %(origin)s and h.lot_id > %(after)s
  and (%(released_at)s::timestamptz is null or h.released_at = %(released_at)s)
order by h.lot_id limit %(limit)s
"""
_HOLD_OF = f"""
select {_COLUMNS} from lot_holds h join lots l using (lot_id) where h.hold_id = %(hold)s
"""
_CAME_WITH_COUNT = "select count(*) from lot_holds where origin_hold = %s"
# The alerts that named the hold (a door or a captured shipment of one of its lots).
_ALERTS_OF_HOLD = f"""
select {ALERT_COLUMNS}
from alerts where lots @> jsonb_build_array(jsonb_build_object('hold_id', %(hold)s::bigint))
order by raised_at desc, alert_id desc limit %(limit)s
"""
_RELEASE = f"""
with freed as (
    update lot_holds set released_at = now(), released_by = %(by)s, release_reason = %(reason)s
    where released_at is null and {{which}}
    returning *
)
select {_COLUMNS} from freed h join lots l using (lot_id) order by h.lot_id
"""
_RELEASE_LOT = _RELEASE.format(which="lot_id = %(lot)s")
_RELEASE_CAME_WITH = """
update lot_holds set released_at = now(), released_by = %(by)s, release_reason = %(reason)s
where released_at is null and origin_hold = %(origin)s
"""
_LIST = f"""
select {_COLUMNS} from lot_holds h join lots l using (lot_id)
where (%(state)s = 'all' or (h.released_at is null) = (%(state)s = 'in_force'))
  and (%(lot)s::bigint is null or h.lot_id = %(lot)s)
  and (%(before)s::bigint is null or h.hold_id < %(before)s)
order by h.hold_id desc limit %(limit)s
"""
# What the edges need of each lot in force: its keys and the units known to be of it
# (a pallet read by its SSCC, a case by its SGTIN carry no lot code of their own).
_HOLD_SET = """
select l.gtin, l.lot_code as lot, h.reason, h.held_at as since,
       array(select u.epc from units u where u.lot_id = l.lot_id and u.epc not like 'sscc:%%'
             order by u.epc limit %(units)s) as epcs,
       array(select distinct u.sscc from units u where u.lot_id = l.lot_id
             and u.sscc is not null order by u.sscc limit %(units)s) as ssccs
from lot_holds h join lots l using (lot_id)
where h.released_at is null order by h.hold_id limit %(lots)s
"""


Reason = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(storable)]


class Hold(Strict):
    hold_id: int
    lot_id: int
    gtin: str
    lot_code: str
    reason: str
    held_by: str  # the API key's name
    held_at: datetime
    origin_hold: int | None  # the hold of the lot named, for a lot held as its descendant
    released_at: datetime | None
    released_by: str | None
    release_reason: str | None
    in_force: bool


class HoldRequest(Strict):
    reason: Reason
    # Also every lot the forward trace reaches from this one (what was made from it).
    downstream: bool = False

    @field_validator("reason")
    @classmethod
    def _said(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("say why: the reason is what the next person reads")
        return value.strip()


class ReleaseRequest(HoldRequest):
    """`downstream`: also release the holds that came with this lot's (its descendants'
    holds put by a downstream hold); holds put on them on their own stay."""


class Held(Strict):
    """A hold put. With `downstream`, the descendants' holds can be a hundred thousand: the
    answer lists the first `limit` of each kind by lot and counts them all; the rest of
    those held with it are paged by GET /api/v1/holds/{hold_id}/lots."""

    hold: Hold
    downstream: list[Hold]  # the descendants held with it (the first page)
    already_held: list[Hold]  # descendants on hold already: their holds stay (first page)
    downstream_total: int = 0
    already_held_total: int = 0


class Released(Strict):
    """The lot's own hold first, then (a first page of) the holds released with it."""

    released: list[Hold]
    released_total: int


class HoldPage(Strict):
    holds: list[Hold]
    # Where the next page starts (the `cursor` parameter), None on the last page.
    next_cursor: int | None


class HoldRecord(Strict):
    """One hold's record: the hold, how many lots were held with it, and the alerts that
    named it (a shipping door or a captured shipment of one of its lots)."""

    hold: Hold
    held_with: int  # lots held with it (GET /api/v1/holds/{hold_id}/lots lists them)
    alerts: list[Alert]


class AlreadyHeld(Exception):
    def __init__(self, hold: Hold) -> None:
        super().__init__(
            f"lot {hold.gtin or '-'}/{hold.lot_code} is on hold already (hold {hold.hold_id}, "
            f"by {hold.held_by} since {hold.held_at.isoformat()}: {hold.reason}): release it "
            "first to hold it for another reason"
        )
        self.hold = hold


class NotHeld(Exception):
    pass


async def _holds(conn: AsyncConnection, sql: str, params: dict[str, Any]) -> list[Hold]:
    cur = conn.cursor(row_factory=dict_row)
    rows = await (await cur.execute(sql, params)).fetchall()  # type: ignore[arg-type]
    return [Hold(**r) for r in rows]


async def _count(conn: AsyncConnection, sql: str, params: Any) -> int:
    row = await (await conn.execute(sql, params)).fetchone()
    return int(row[0]) if row else 0


async def hold(
    conn: AsyncConnection,
    lot: trace.Lot,
    reason: str,
    by: str,
    downstream: bool = False,
    page: int = PAGE,
) -> Held:
    """Put `lot` on hold (and with `downstream` what was made from it), in one transaction.
    AlreadyHeld if the lot itself is held: nothing is changed then. The descendants are
    listed up to `page` of each kind, and counted."""
    async with conn.transaction():
        put = await _holds(conn, _HOLD, {"lot": lot.lot_id, "reason": reason, "by": by})
        if not put:
            current = await _holds(conn, _IN_FORCE_OF, {"lots": [lot.lot_id]})
            raise AlreadyHeld(current[0])
        first = put[0]
        if not downstream:
            return Held(hold=first, downstream=[], already_held=[])
        reached = await trace.reachable(conn, lot.lot_id, "forward")
        below = [x for x in reached if x != lot.lot_id]
        params = {"lots": below, "reason": reason, "by": by, "origin": first.hold_id}
        held_total = await _count(conn, _HOLD_MANY, params)
        apart = {"lots": below, "origin": first.hold_id, "limit": page}
        return Held(
            hold=first,
            downstream=await held_with(conn, first.hold_id, None, page),
            already_held=await _holds(conn, _HELD_APART_PAGE, apart),
            downstream_total=held_total,
            already_held_total=await _count(conn, _HELD_APART_COUNT, apart),
        )


async def release(
    conn: AsyncConnection,
    lot: trace.Lot,
    reason: str,
    by: str,
    downstream: bool = False,
    page: int = PAGE,
) -> Released:
    """End the lot's hold in force (and with `downstream` the holds that came with it; the
    first `page` of them listed, all counted). NotHeld if the lot is not on hold."""
    params: dict[str, Any] = {"lot": lot.lot_id, "reason": reason, "by": by}
    async with conn.transaction():
        freed = await _holds(conn, _RELEASE_LOT, params)
        if not freed:
            raise NotHeld(
                f"lot {lot.gtin or '-'}/{lot.lot_code} is not on hold: nothing to release "
                f"(GET /api/v1/lots/{lot.lot_id}/holds shows its history)"
            )
        total = 1
        if downstream:
            own = freed[0]
            params["origin"] = own.hold_id
            total += max((await conn.execute(_RELEASE_CAME_WITH, params)).rowcount, 0)
            # Released now: in this transaction, at the same now() as the lot's own.
            freed += await _holds(
                conn,
                _CAME_WITH,
                {"origin": own.hold_id, "after": -1, "released_at": own.released_at, "limit": page},
            )
    return Released(released=freed, released_total=total)


async def held_with(
    conn: AsyncConnection, hold_id: int, after: int | None, limit: int
) -> list[Hold]:
    """The holds that came with hold `hold_id` (its lot's descendants), by lot, after lot
    id `after`."""
    params = {"origin": hold_id, "after": -1 if after is None else after, "limit": limit}
    return await _holds(conn, _CAME_WITH, params | {"released_at": None})


async def held_with_page(
    conn: AsyncConnection, hold_id: int, cursor: int | None, limit: int
) -> HoldPage:
    found = await held_with(conn, hold_id, cursor, limit + 1)
    more = len(found) > limit
    return HoldPage(holds=found[:limit], next_cursor=found[limit - 1].lot_id if more else None)


async def hold_of(conn: AsyncConnection, hold_id: int) -> Hold | None:
    found = await _holds(conn, _HOLD_OF, {"hold": hold_id})
    return found[0] if found else None


async def record(conn: AsyncConnection, hold_id: int, alert_limit: int = 1000) -> HoldRecord | None:
    """The hold's record; None for a hold id that does not exist."""
    found = await hold_of(conn, hold_id)
    if found is None:
        return None
    cur = conn.cursor(row_factory=dict_row)
    rows = await (
        await cur.execute(_ALERTS_OF_HOLD, {"hold": hold_id, "limit": alert_limit})
    ).fetchall()
    return HoldRecord(
        hold=found,
        held_with=await _count(conn, _CAME_WITH_COUNT, (hold_id,)),
        alerts=[Alert(**r) for r in rows],
    )


async def holds(
    conn: AsyncConnection,
    state: HoldState = "in_force",
    lot_id: int | None = None,
    limit: int = 1000,
    cursor: int | None = None,
) -> HoldPage:
    """Holds, newest first: those in force, those released, or all (of one lot, if given);
    `cursor`: the page after that hold."""
    params = {"state": state, "lot": lot_id, "limit": limit + 1, "before": cursor}
    found = await _holds(conn, _LIST, params)
    more = len(found) > limit
    return HoldPage(holds=found[:limit], next_cursor=found[limit - 1].hold_id if more else None)


async def hold_set(conn: AsyncConnection) -> list[HeldLot]:
    """The lots in force as the edges get them. A lot the contract cannot carry (a lot code
    longer than 128 characters) is left out with an error in the log, never the whole set."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"units": MAX_HELD_UNITS, "lots": MAX_HELD_LOTS}
    out = []
    for row in await (await cur.execute(_HOLD_SET, params)).fetchall():
        try:
            out.append(HeldLot(**row))
        except ValidationError as err:
            log.error(
                "holds: lot %s/%s cannot be sent to the edges (%s): its shipping doors will "
                "not flag it",
                row["gtin"],
                row["lot"][:200],
                err.errors()[0]["msg"],
            )
    return out


# ---- the announcer ---------------------------------------------------------------------


class HoldsSettings(BaseSettings):
    """TRACE_HOLDS_*: the announcer's broker identity and how often it looks for changes
    made through another collector."""

    model_config = SettingsConfigDict(env_prefix="TRACE_HOLDS_", env_file=ENV_FILE, extra="ignore")

    username: str | None = None
    password: str | None = None
    check_every_s: float = Field(default=5.0, gt=0, le=3600)

    def broker(self, collector: BrokerSettings) -> BrokerSettings | None:
        if self.username is None:
            return None
        return collector.model_copy(update={"username": self.username, "password": self.password})


class AnnouncerState:
    """What the announcer did last, for tests and the log."""

    def __init__(self) -> None:
        self.published = 0
        self.last_published_at: datetime | None = None
        self.last_lots = -1
        self.last_error: str | None = None


async def announce_holds(
    collector: CollectorSettings,
    settings: HoldsSettings,
    wake: asyncio.Event | None = None,
    state: AnnouncerState | None = None,
) -> None:
    """Keep the retained hold set on the broker equal to the holds in force, until
    cancelled; a lost broker or database is reconnected with backoff (and the set published
    again on reconnecting: the broker may have lost its retained messages)."""
    broker = settings.broker(collector.mqtt)
    if broker is None:
        raise ValueError("TRACE_HOLDS_USERNAME is unset: the announcer has no identity")
    state = state or AnnouncerState()
    wake = wake or asyncio.Event()
    delay = 0.5
    while True:
        started = time.monotonic()
        try:
            await _announce(collector, broker, settings, wake, state)
        except aiomqtt.MqttError as err:
            state.last_error = f"broker: {err}"
            log.warning("holds: broker connection lost (%s); again in %.1fs", err, delay)
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            state.last_error = f"database: {err}"
            log.warning("holds: database unavailable (%s); again in %.1fs", err, delay)
        if time.monotonic() - started > 60:
            delay = 0.5
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 30.0)


async def _announce(
    collector: CollectorSettings,
    broker: BrokerSettings,
    settings: HoldsSettings,
    wake: asyncio.Event,
    state: AnnouncerState,
) -> None:
    last: list[HeldLot] | None = None
    async with (
        await psycopg.AsyncConnection.connect(collector.database_url, autocommit=True) as conn,
        aiomqtt.Client(
            **broker.client_args(),  # type: ignore[arg-type]
            identifier=broker.username,
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client,
    ):
        while True:
            wake.clear()
            lots = await hold_set(conn)
            if lots != last:
                message = HoldSet(time=datetime.now(UTC), lots=lots)
                await client.publish(topics.holds(), message.model_dump_json(), qos=1, retain=True)
                last = lots
                state.published += 1
                state.last_published_at = message.time
                state.last_lots = len(lots)
                log.info("holds: %d lots on hold published to the edges", len(lots))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.check_every_s):  # not 3.11's wait_for
                    await wake.wait()
