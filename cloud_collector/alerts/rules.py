"""Alert rules: what an admin asks to be told about, with its parameters.

- `excursion`: a good reading out of its tag's spec limits in a batch that was running;
  once per batch, device and tag. Trigger on the batch rollups, at ingest. Parameters:
  lines, devices, tags.
- `qc_failed`: a QC result that did not pass; once per result. Trigger on qc_results, at
  import. Parameters: lines, checks (IPQC, FQC, incoming).
- `device_offline`: an edge offline or silent, or a device of an online edge disconnected,
  for longer than `minutes`; once per occurrence. Evaluator task. Parameters: minutes,
  edges, devices.
- `outbox_alarm`: an edge status with alarms, or its outbox deeper than `depth` or its
  oldest record older than `oldest_age_s`; once per occurrence. Evaluator task.
  Parameters: edges, depth, oldest_age_s.
- `gap_found`: a sequence gap in an edge's stream still open `after_minutes` after it was
  found; once per gap. Evaluator task. Parameters: edges, after_minutes.

A list parameter left out means every one; several rules of a kind raise one alert per
subject (the first rule matching names itself in `rule_id`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import AfterValidator, Field, TypeAdapter

from protocols.mqtt.contract import storable
from protocols.strict import Strict

Word = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(storable)]
Names = Annotated[list[Word], Field(min_length=1, max_length=1000)]


class Excursion(Strict):
    """A good reading out of its tag's spec limits during a batch."""

    kind: Literal["excursion"]
    lines: Names | None = None
    devices: Names | None = None
    tags: Names | None = None


class QcFailed(Strict):
    """A QC result that did not pass."""

    kind: Literal["qc_failed"]
    lines: Names | None = None
    checks: Annotated[list[Literal["IPQC", "FQC", "incoming"]], Field(min_length=1)] | None = None


class DeviceOffline(Strict):
    """An edge (offline, or silent: no status for three of its intervals) or a device of it
    (disconnected) for longer than `minutes`."""

    kind: Literal["device_offline"]
    minutes: float = Field(ge=0, le=7 * 24 * 60)
    edges: Names | None = None
    devices: Names | None = None


class OutboxAlarm(Strict):
    """An edge reporting alarms, or its outbox holding more than `depth` records or its
    oldest record older than `oldest_age_s` (each check only when given)."""

    kind: Literal["outbox_alarm"]
    edges: Names | None = None
    depth: int | None = Field(default=None, ge=0)
    oldest_age_s: float | None = Field(default=None, ge=0)


class GapFound(Strict):
    """A hole in an edge's numbering (records the collector never got) still open
    `after_minutes` after it was found: the edge did not send them again."""

    kind: Literal["gap_found"]
    edges: Names | None = None
    after_minutes: float = Field(default=5.0, ge=0, le=7 * 24 * 60)


Condition = Annotated[
    Excursion | QcFailed | DeviceOffline | OutboxAlarm | GapFound, Field(discriminator="kind")
]
_CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


class RuleRequest(Strict):
    name: Word
    enabled: bool = True
    condition: Condition


class Rule(Strict):
    rule_id: int
    name: str
    enabled: bool
    condition: Condition
    created_by: str
    created_at: datetime
    updated_at: datetime


class NameTaken(Exception):
    pass


_COLUMNS = "rule_id, name, enabled, kind, params, created_by, created_at, updated_at"
_CREATE = f"""
insert into alert_rules (name, kind, params, enabled, created_by)
values (%(name)s, %(kind)s, %(params)s, %(enabled)s, %(by)s) returning {_COLUMNS}
"""
_REPLACE = f"""
update alert_rules set name = %(name)s, kind = %(kind)s, params = %(params)s,
    enabled = %(enabled)s, updated_at = now()
where rule_id = %(rule)s returning {_COLUMNS}
"""
_LIST = f"select {_COLUMNS} from alert_rules order by rule_id"
_DELETE = "delete from alert_rules where rule_id = %(rule)s"


def _rule(row: dict[str, Any]) -> Rule:
    condition = _CONDITION.validate_python({"kind": row.pop("kind"), **row.pop("params")})
    return Rule(condition=condition, **row)


def _params(body: RuleRequest) -> dict[str, Any]:
    return {
        "name": body.name,
        "kind": body.condition.kind,
        # Only what was given: a list left out means all, which the triggers read as absent.
        "params": Jsonb(body.condition.model_dump(exclude={"kind"}, exclude_none=True)),
        "enabled": body.enabled,
    }


async def _one(conn: AsyncConnection, sql: str, params: dict[str, Any]) -> Rule | None:
    cur = conn.cursor(row_factory=dict_row)
    try:
        row = await (await cur.execute(sql, params)).fetchone()
    except UniqueViolation as err:
        taken = f"an alert rule named {params['name']!r} exists: pick another name"
        raise NameTaken(taken) from err
    return None if row is None else _rule(row)


async def create(conn: AsyncConnection, body: RuleRequest, by: str) -> Rule:
    rule = await _one(conn, _CREATE, {**_params(body), "by": by})
    assert rule is not None  # an insert returns its row
    return rule


async def replace(conn: AsyncConnection, rule_id: int, body: RuleRequest) -> Rule | None:
    return await _one(conn, _REPLACE, {**_params(body), "rule": rule_id})


async def rules(conn: AsyncConnection) -> list[Rule]:
    cur = conn.cursor(row_factory=dict_row)
    return [_rule(r) for r in await (await cur.execute(_LIST)).fetchall()]


async def delete(conn: AsyncConnection, rule_id: int) -> bool:
    """Delete the rule; the alerts it raised stay (their rule_id becomes null)."""
    cur = await conn.execute(_DELETE, {"rule": rule_id})
    return cur.rowcount == 1
