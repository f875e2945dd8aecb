"""The time-based alert rules (device_offline, outbox_alarm, gap_found), looked at every
TRACE_ALERTS_EVALUATE_EVERY_S by a task of each collector.

Each rule kind is one statement: the conditions true now (`found`) raise an alert for each
subject without an open one, and the open alerts of that kind whose subject is no longer
found are cleared (the edge came back, the outbox drained, the gap was filled): the next
occurrence is a new alert. Collectors running it at once raise each alert once (the unique
index of open alerts per kind and subject), so any number may run it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import AsyncConnection

from cloud_collector.edge_status import DEFAULT_INTERVAL_S, SILENT_AFTER_INTERVALS

log = logging.getLogger(__name__)

# A rule's list parameter left out means all; given, the value must be in it.
_MATCH = "(r.params->'{param}' is null or r.params->'{param}' ? ({value}))"

_EDGES = """
select e.edge_id, e.state, e.status, e.received_at, e.status_time,
       coalesce(e.state_since, e.received_at) as since,
       e.state = 'online' and e.received_at < now() - make_interval(
           secs => %(silent_after)s * coalesce((e.status->>'interval_s')::float8,
                                              %(default_interval)s)) as silent
from edge_status e where e.state is not null
"""

_DEVICE_OFFLINE = f"""
with rules as (select rule_id, params, make_interval(secs => (params->>'minutes')::float8 * 60)
                   as longer_than
               from alert_rules where kind = 'device_offline' and enabled),
edges as ({_EDGES}),
whole_edges as (
    select r.rule_id, 'edge/' || e.edge_id as subject, null::text as line_id, e.edge_id,
           case when e.state = 'offline' then e.since else e.received_at end as since,
           case when e.state = 'offline' then 'offline' else 'silent' end as how,
           null::text as device
    from edges e join rules r on {_MATCH.format(param="edges", value="e.edge_id")}
    where r.params->'devices' is null
      and ((e.state = 'offline' and e.since <= now() - r.longer_than)
           or (e.silent and e.received_at <= now() - r.longer_than))
),
devices as (
    select r.rule_id, 'device/' || e.edge_id || '/' || (d->>'device') as subject,
           d->>'station' as line_id, e.edge_id,
           coalesce((d->>'offline_since')::timestamptz, e.received_at) as since,
           'disconnected' as how, d->>'device' as device
    from edges e cross join lateral jsonb_array_elements(coalesce(e.status->'devices', '[]')) d
    join rules r on {_MATCH.format(param="edges", value="e.edge_id")}
        and {_MATCH.format(param="devices", value="d->>'device'")}
    where e.state = 'online' and not e.silent and (d->>'connected')::boolean is false
      and coalesce((d->>'offline_since')::timestamptz, e.received_at) <= now() - r.longer_than
),
found as (
    select distinct on (subject) rule_id, subject, line_id, edge_id as source_edge,
           since as event_time,
           case when device is null then format('edge %%s %%s since %%s', edge_id, how, since)
                else format('device %%s of edge %%s %%s since %%s', device, edge_id, how, since)
           end as summary,
           jsonb_build_object('edge_id', edge_id, 'device', device, 'state', how,
                              'since', since) as detail
    from (select * from whole_edges union all select * from devices) x
    order by subject, rule_id
)
"""

_OUTBOX_ALARM = f"""
with rules as (select rule_id, params from alert_rules where kind = 'outbox_alarm' and enabled),
found as (
    select distinct on (e.edge_id) r.rule_id, 'edge/' || e.edge_id as subject,
           null::text as line_id, e.edge_id as source_edge, e.status_time as event_time,
           format('edge %%s: %%s', e.edge_id, concat_ws('; ',
               (select string_agg(a, '; ') from jsonb_array_elements_text(e.status->'alarms') a),
               'outbox ' || (e.status->>'outbox_depth') || ' records',
               'oldest ' || (e.status->>'outbox_oldest_age_s') || ' s')) as summary,
           jsonb_build_object('edge_id', e.edge_id, 'alarms', e.status->'alarms',
                              'outbox_depth', e.status->'outbox_depth',
                              'outbox_oldest_age_s', e.status->'outbox_oldest_age_s',
                              'outbox_dropped', e.status->'outbox_dropped') as detail
    from edge_status e join rules r on {_MATCH.format(param="edges", value="e.edge_id")}
    where e.status is not null
      and (jsonb_array_length(coalesce(e.status->'alarms', '[]')) > 0
           or (e.status->>'outbox_depth')::float8 > (r.params->>'depth')::float8
           or (e.status->>'outbox_oldest_age_s')::float8 > (r.params->>'oldest_age_s')::float8)
    order by e.edge_id, r.rule_id
)
"""

_GAP_FOUND = f"""
with rules as (select rule_id, params from alert_rules where kind = 'gap_found' and enabled),
found as (
    select distinct on (subject) r.rule_id,
           'gap/' || s.edge_id || '/' || s.stream || '/' || s.epoch || '/' || g.first_missing
               || '-' || g.last_missing as subject,
           null::text as line_id, s.edge_id as source_edge, g.before_time as event_time,
           format('edge %%s never sent records %%s to %%s of its %%s stream (epoch %%s)',
                  s.edge_id, g.first_missing, g.last_missing, s.stream, s.epoch) as summary,
           jsonb_build_object('edge_id', s.edge_id, 'stream', s.stream, 'epoch', s.epoch,
                              'first_missing', g.first_missing,
                              'last_missing', g.last_missing, 'before_time', g.before_time,
                              'after_time', g.after_time, 'found_at', g.found_at) as detail
    from sequence_gaps g join edge_streams s using (stream_id)
    join rules r on {_MATCH.format(param="edges", value="s.edge_id")}
    where g.found_at <= now() - make_interval(secs => (r.params->>'after_minutes')::float8 * 60)
    order by subject, r.rule_id
)
"""

# Raise what is found and not open; clear what is open and no longer found.
_RAISE_AND_CLEAR = """
, raised as (
    insert into alerts (kind, rule_id, subject, line_id, source_edge, event_time, summary, detail)
    select %(kind)s, rule_id, subject, line_id, source_edge, event_time, summary, detail
    from found
    on conflict (kind, subject) where subject is not null and cleared_at is null do nothing
    returning alert_id
),
cleared as (
    update alerts a set cleared_at = now()
    where a.kind = %(kind)s and a.cleared_at is null and a.subject is not null
      and not exists (select 1 from found f where f.subject = a.subject)
    returning alert_id
)
select (select count(*) from raised), (select count(*) from cleared)
"""

EVALUATED: dict[str, str] = {
    "device_offline": _DEVICE_OFFLINE + _RAISE_AND_CLEAR,
    "outbox_alarm": _OUTBOX_ALARM + _RAISE_AND_CLEAR,
    "gap_found": _GAP_FOUND + _RAISE_AND_CLEAR,
}


@dataclass
class EvaluatorState:
    """What the evaluator of this process did, for tests and the log."""

    rounds: int = 0
    raised: dict[str, int] = field(default_factory=dict)
    cleared: dict[str, int] = field(default_factory=dict)
    last_round_at: datetime | None = None
    last_error: str | None = None


async def evaluate(conn: AsyncConnection, state: EvaluatorState | None = None) -> dict[str, int]:
    """One round over every time-based kind, each in its own transaction: raised per kind."""
    raised: dict[str, int] = {}
    for kind, sql in EVALUATED.items():
        params = {
            "kind": kind,
            "silent_after": SILENT_AFTER_INTERVALS,
            "default_interval": DEFAULT_INTERVAL_S,
        }
        async with conn.transaction():
            row = await (await conn.execute(sql, params)).fetchone()
        assert row is not None  # the statement's last select is one row
        raised[kind], cleared = int(row[0]), int(row[1])
        if state is not None:
            state.raised[kind] = state.raised.get(kind, 0) + raised[kind]
            state.cleared[kind] = state.cleared.get(kind, 0) + cleared
        if raised[kind] or cleared:
            log.info("alerts: %s raised %d, cleared %d", kind, raised[kind], cleared)
    return raised


async def keep_evaluating(
    database_url: str, every_s: float, state: EvaluatorState | None = None
) -> None:
    """Evaluate the time-based rules every `every_s` until cancelled; a lost database is
    reconnected at the next round."""
    state = state or EvaluatorState()
    while True:
        try:
            async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
                while True:
                    await evaluate(conn, state)
                    state.rounds += 1
                    state.last_round_at = datetime.now().astimezone()
                    await asyncio.sleep(every_s)
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            state.last_error = f"database: {err}"
            log.warning("alerts: database unavailable (%s); again in %.1fs", err, every_s)
        await asyncio.sleep(every_s)
