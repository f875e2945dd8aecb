"""The alerts raised, as the API lists and acknowledges them (cloud_collector/alerts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from protocols.strict import Strict

AlertState = Literal["open", "unacknowledged", "cleared", "all"]

COLUMNS = """
alert_id, kind, raised_at, rule_id, subject, line_id, summary, detail, cleared_at,
acknowledged_at, acknowledged_by, acknowledge_note, event_id, event_time, source_edge,
read_point, biz_location, biz_step, documents, lots
"""
_LIST = f"""
select {COLUMNS} from alerts
where (%(kind)s::text is null or kind = %(kind)s)
  and (%(since)s::timestamptz is null or raised_at >= %(since)s)
  and (%(line)s::text is null or line_id = %(line)s)
  and case %(state)s when 'open' then cleared_at is null
                     when 'unacknowledged' then acknowledged_at is null
                     when 'cleared' then cleared_at is not null
                     else true end
order by raised_at desc, alert_id desc limit %(limit)s
"""
_SOME = f"select {COLUMNS} from alerts where alert_id = any(%(alerts)s)"
_ACKNOWLEDGE = f"""
update alerts set acknowledged_at = now(), acknowledged_by = %(by)s, acknowledge_note = %(note)s
where alert_id = %(alert)s and acknowledged_at is null
returning {COLUMNS}
"""


class Alert(Strict):
    alert_id: int
    kind: str
    raised_at: datetime
    rule_id: int | None  # the rule that raised it; null: raised without one (held lot)
    subject: str | None  # what it is about within its kind: its deduplication key
    line_id: str | None
    summary: str | None
    detail: dict[str, Any]
    cleared_at: datetime | None  # the condition ended (an edge back online, a gap filled)
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledge_note: str | None
    # Of an alert raised by a trace event (a held lot read at a door):
    event_id: str | None
    event_time: datetime | None
    source_edge: str | None
    read_point: str | None
    biz_location: str | None
    biz_step: str | None
    documents: list[dict[str, Any]]
    lots: list[dict[str, Any]]


class AlreadyAcknowledged(Exception):
    def __init__(self, alert: Alert) -> None:
        super().__init__(
            f"alert {alert.alert_id} was acknowledged already by {alert.acknowledged_by} at "
            f"{alert.acknowledged_at.isoformat() if alert.acknowledged_at else '?'}"
        )
        self.alert = alert


async def alerts(
    conn: AsyncConnection,
    kind: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
    state: AlertState = "all",
    line: str | None = None,
) -> list[Alert]:
    """Alerts, newest first."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"kind": kind, "since": since, "limit": limit, "state": state, "line": line}
    rows = await (await cur.execute(_LIST, params)).fetchall()
    return [Alert(**r) for r in rows]


async def by_id(conn: AsyncConnection, alert_ids: list[int]) -> dict[int, Alert]:
    """The alerts of these ids that exist."""
    cur = conn.cursor(row_factory=dict_row)
    rows = await (await cur.execute(_SOME, {"alerts": alert_ids})).fetchall()
    return {r["alert_id"]: Alert(**r) for r in rows}


async def acknowledge(
    conn: AsyncConnection, alert_id: int, by: str, note: str | None
) -> Alert | None:
    """Mark the alert seen by `by`; None if there is no such alert, AlreadyAcknowledged if
    someone did already (the first acknowledgement is the one kept)."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"alert": alert_id, "by": by, "note": note}
    row = await (await cur.execute(_ACKNOWLEDGE, params)).fetchone()
    if row is not None:
        return Alert(**row)
    found = await by_id(conn, [alert_id])
    if found:
        raise AlreadyAcknowledged(found[alert_id])
    return None
