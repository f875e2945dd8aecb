"""The lots on hold as this edge last heard of them, so that a shipping door flags a held
lot the moment it is read, with the collector reachable or not.

The collector publishes the whole set, retained, on `trace/v1/holds` (contract `HoldSet`;
cloud_collector/holds.py). `HeldLots.apply` replaces what the edge keeps with a newer set
in one transaction of the edge's store (edge_agent/store.py): after a restart without the
broker, the doors still know. A set older than the one kept, or one the contract refuses,
changes nothing (counted, logged, the reason kept for the status).

`HeldLots.match` says which items of an event are of a held lot: by GTIN + lot, by lot
code alone for a lot whose product the collector does not know, by a unit's EPC (SGTIN)
or a pallet's SSCC. `alarm` keeps what happened at a door for the edge's status (the
alarms the fleet view shows), for `ALARM_S`.

`subscription` is what the publisher (edge_agent/publisher.py) reads besides its acks: the
hold set on its connection: the broker ties one connection to the edge's identity, so
the set cannot come on a connection of its own.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from edge_agent.publisher import Subscription
from edge_agent.store import EdgeStore
from protocols.mqtt import topics
from protocols.mqtt.contract import HoldSet, Item

log = logging.getLogger(__name__)

ALARM_S = 3600.0  # how long a held lot at a door stays among the edge's alarms
MAX_ALARMS = 100

_REPLACE = (
    "delete from held_lots",
    "delete from held_units",
    "delete from held_set",
)
_ADD_LOT = "insert or replace into held_lots values (?, ?, ?, ?)"
_ADD_UNIT = "insert or replace into held_units values (?, ?, ?)"
_SET = "insert into held_set values (1, ?, ?)"
# One item's held lot, by each key it may carry (first match wins).
_BY_LOT = "select gtin, lot, reason, since from held_lots where gtin = ? and lot = ?"
_BY_LOT_ALONE = "select gtin, lot, reason, since from held_lots where gtin = '' and lot = ?"
_BY_UNIT = """
select l.gtin, l.lot, l.reason, l.since from held_units u
join held_lots l on l.gtin = u.gtin and l.lot = u.lot where u.unit = ?
"""


@dataclass(frozen=True)
class HeldItem:
    """An item of an event that is of a held lot, and that lot's hold."""

    item: Item
    gtin: str
    lot: str
    reason: str
    since: str

    def describe(self) -> str:
        what = self.item.sscc or self.item.epc or self.item.raw or self.lot
        lot = f"{self.gtin or '-'}/{self.lot}"
        return f"{what} (lot {lot}, on hold since {self.since}: {self.reason})"


@dataclass
class HoldsHealth:
    received: int = 0  # hold sets applied
    ignored: int = 0  # older than the one kept, or refused by the contract
    last_ignored: str | None = None
    set_time: str | None = None  # the collector's time of the set kept
    lots: int = 0
    flagged: int = 0  # events flagged held_lot at a door
    subscription_refused: str | None = None  # why the broker refused the set's topic
    alarms: deque[tuple[datetime, str]] = field(default_factory=lambda: deque(maxlen=MAX_ALARMS))


class HeldLots:
    def __init__(self, store: EdgeStore) -> None:
        self.store = store
        self.db = store.db
        self.health = HoldsHealth()
        row = self.db.execute("select time, lots from held_set").fetchone()
        if row is not None:
            self.health.set_time, self.health.lots = row[0], row[1]

    def apply(self, payload: bytes | bytearray | str) -> bool:
        """Keep the hold set `payload` carries if it is newer than the one kept. Nothing in
        it can raise: it is outside input."""
        try:
            text = payload if isinstance(payload, str) else bytes(payload).decode("utf-8")
            hold_set = HoldSet.model_validate_json(text)
        except (UnicodeDecodeError, ValidationError) as err:
            reason = f"hold set refused: {err}"[:1000]
            return self._ignore(reason)
        kept = self.health.set_time
        if kept is not None and hold_set.time <= datetime.fromisoformat(kept):
            return self._ignore(f"hold set of {hold_set.time.isoformat()} is not newer than {kept}")
        with self.store.transaction() as db:
            for statement in _REPLACE:
                db.execute(statement)
            db.executemany(
                _ADD_LOT,
                [(x.gtin, x.lot, x.reason, x.since.isoformat()) for x in hold_set.lots],
            )
            units = [(epc, x.gtin, x.lot) for x in hold_set.lots for epc in x.epcs]
            units += [(f"sscc:{s}", x.gtin, x.lot) for x in hold_set.lots for s in x.ssccs]
            db.executemany(_ADD_UNIT, units)
            db.execute(_SET, (hold_set.time.isoformat(), len(hold_set.lots)))
        self.health.received += 1
        self.health.set_time = hold_set.time.isoformat()
        self.health.lots = len(hold_set.lots)
        log.info("holds: %d lots on hold (set of %s)", len(hold_set.lots), self.health.set_time)
        return True

    def _ignore(self, reason: str) -> bool:
        self.health.ignored += 1
        self.health.last_ignored = reason
        log.warning("holds: %s", reason)
        return False

    def refused_subscription(self, reason: str) -> None:
        self.health.subscription_refused = reason
        log.error("holds: %s", reason)

    def match(self, items: list[Item]) -> list[HeldItem]:
        out = []
        for item in items:
            row = None
            if item.lot is not None:
                row = self.db.execute(_BY_LOT, (item.gtin or "", item.lot)).fetchone()
                row = row or self.db.execute(_BY_LOT_ALONE, (item.lot,)).fetchone()
            if row is None and item.epc is not None:
                row = self.db.execute(_BY_UNIT, (item.epc,)).fetchone()
            if row is None and item.sscc is not None:
                row = self.db.execute(_BY_UNIT, (f"sscc:{item.sscc}",)).fetchone()
            if row is not None:
                out.append(HeldItem(item, *row))
        return out

    def alarm(self, text: str, at: datetime | None = None) -> None:
        self.health.flagged += 1
        self.health.alarms.append((at or datetime.now(UTC), text))

    def alarms(self, now: datetime | None = None) -> list[str]:
        """What happened at doors within ALARM_S, for the edge's status."""
        since = (now or datetime.now(UTC)) - timedelta(seconds=ALARM_S)
        return [f"{at.isoformat()} {text}" for at, text in self.health.alarms if at >= since]

    def status(self) -> dict[str, Any]:
        h = self.health
        return {
            "lots": h.lots,
            "set_time": h.set_time,
            "received": h.received,
            "ignored": h.ignored,
            "last_ignored": h.last_ignored,
            "flagged": h.flagged,
            "subscription_refused": h.subscription_refused,
        }


def subscription(held: HeldLots) -> Subscription:
    """The hold set, read on the publisher's connection (the retained set arrives on every
    reconnect, so an edge that was offline catches up). A refused subscription leaves data
    and acks going; only the door list stays as it was (an older broker ACL)."""
    return Subscription(
        topic=topics.holds(),
        on_message=held.apply,  # type: ignore[arg-type]
        on_refused=held.refused_subscription,
    )
