"""The EPCIS SimpleEventQuery over URL parameters (GET /epcis/events), as SQL on
trace_events and event_items. Parameters are read from tables: a parameter this module does
not know is an error naming it, never silently ignored (a typo would widen a recall query).
Pages are keyset pages: the next-page token carries the last row's sort key, the number of
events served so far and a digest of the filters, so it cannot be replayed on other filters.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloud_collector.auth import SHIPPED_TO_PARTNER_SQL
from cloud_collector.epcis.identifiers import cbv_word, keys
from cloud_collector.epcis.render import bare

# What a partner may see: the events it captured itself, and our shipping events of
# shipments to its customers (auth.SHIPPED_TO_PARTNER_SQL). Nothing else about the lots
# shipped to it: not how they were made or what we made of the rest of them (our
# transformations name our other suppliers' lots and our products), not our shipments of
# the same lots to other customers (their orders, their addresses), not what other partners
# captured about them.
_PARTNER_SEES = (
    "(e.partner_id = %s or (e.partner_id is null and e.event_id in ("
    "select shipped.event_id from ({shipped}) shipped)))"
)
MAX_PER_PAGE = 1000
DEFAULT_PER_PAGE = 30

# parameter -> (column, operator)
TIME_FILTERS: dict[str, tuple[str, str]] = {
    "GE_eventTime": ("event_time", ">="),
    "LT_eventTime": ("event_time", "<"),
    "GE_recordTime": ("record_time", ">="),
    "LT_recordTime": ("record_time", "<"),
}
# parameter -> column; the values are normalised by VALUE_FORMS before comparing.
EQUAL_FILTERS: dict[str, str] = {
    "eventType": "event_type",
    "EQ_action": "action",
    "EQ_bizStep": "biz_step",
    "EQ_disposition": "disposition",
    "EQ_readPoint": "read_point",
    "EQ_bizLocation": "biz_location",
    "EQ_eventID": "event_id",
}
# parameter -> (event_items roles searched, instances or classes)
MATCH_FILTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "MATCH_epc": (("observed", "child"), "epc"),
    "MATCH_parentID": (("parent",), "epc"),
    "MATCH_inputEPC": (("input",), "epc"),
    "MATCH_outputEPC": (("output",), "epc"),
    "MATCH_anyEPC": (("observed", "child", "parent", "input", "output"), "epc"),
    "MATCH_epcClass": (("observed", "child"), "class"),
    "MATCH_inputEPCClass": (("input",), "class"),
    "MATCH_outputEPCClass": (("output",), "class"),
    "MATCH_anyEPCClass": (("observed", "child", "input", "output"), "class"),
}
ORDER_COLUMNS = {"eventTime": "event_time", "recordTime": "record_time"}
OTHER_PARAMETERS = frozenset(
    {
        "perPage",
        "nextPageToken",
        "orderBy",
        "orderDirection",
        "eventCountLimit",
        "maxEventCount",
        "EXISTS_errorDeclaration",
        "EQ_transformationID",
    }
)


def _value_forms(name: str, value: str) -> list[str]:
    """Every spelling a stored column may hold for a query value."""
    if name == "EQ_bizStep":
        return [bare("bizstep", cbv_word("bizStep", value) or value)]
    if name == "EQ_disposition":
        return [cbv_word("disposition", value) or value]
    if name in ("EQ_readPoint", "EQ_bizLocation"):
        return list({value, bare("loc", value)})
    if name == "EQ_eventID":
        return id_forms(value)
    return [value]


def id_forms(event_id: str) -> list[str]:
    """An eventID as stored: our own events' ids are given as urn:x-trace:event:{id}."""
    return sorted({event_id, bare("event", event_id)})


def one_event(event_id: str) -> tuple[str, list[Any]]:
    """The condition for the one event `event_id` names: urn:x-trace:event:{id} is our own
    event {id} (capture refuses that prefix, so no captured event can take the name)."""
    own = bare("event", event_id)
    if own != event_id:
        return "e.event_id = %s and e.body_format = 'trace.v1'", [own]
    return "e.event_id = %s", [event_id]


class QueryParameterError(Exception):
    """epcisException:QueryParameterException: names the parameter and the fix."""


@dataclass
class Query:
    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    order_column: str = "record_time"
    descending: bool = False
    per_page: int = DEFAULT_PER_PAGE
    event_count_limit: int | None = None
    max_event_count: int | None = None
    after: tuple[datetime, str] | None = None
    served: int = 0
    digest: str = ""

    def only_what_partner_sees(self, partner_id: str) -> None:
        """A partner sees what it captured and our shipments to it (_PARTNER_SEES)."""
        shipped = SHIPPED_TO_PARTNER_SQL.replace("%(partner_id)s", "%s")
        self.where.append(_PARTNER_SEES.format(shipped=shipped))
        self.params += [partner_id] * (1 + SHIPPED_TO_PARTNER_SQL.count("%(partner_id)s"))

    def sql(self, columns: str, limit: int) -> tuple[str, list[Any]]:
        where = list(self.where)
        params = list(self.params)
        direction = "desc" if self.descending else "asc"
        if self.after is not None:
            where.append(f"(e.{self.order_column}, e.event_id) {'<' if self.descending else '>'}"
                         " (%s, %s)")  # fmt: skip
            params += list(self.after)
        sql = (
            f"select {columns} from trace_events e where {' and '.join(where) or 'true'}"
            f" order by e.{self.order_column} {direction}, e.event_id {direction} limit %s"
        )
        return sql, [*params, limit]

    def count_sql(self, limit: int) -> tuple[str, list[Any]]:
        where = " and ".join(self.where) or "true"
        sql = f"select count(*) from (select 1 from trace_events e where {where} limit %s) n"
        return sql, [*self.params, limit]

    def next_token(self, last: tuple[datetime, str], served: int) -> str:
        payload = {"a": [last[0].isoformat(), last[1]], "n": served, "q": self.digest}
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def parse(items: list[tuple[str, str]]) -> Query:
    """A Query from the URL's parameters (repeated or pipe-separated values are OR'ed)."""
    values: dict[str, list[str]] = {}
    for name, raw in items:
        if not (
            name in TIME_FILTERS
            or name in EQUAL_FILTERS
            or name in MATCH_FILTERS
            or name in OTHER_PARAMETERS
        ):
            raise QueryParameterError(
                f"unknown query parameter {name!r}: see GET /epcis/events in the README for "
                "the parameters this repository answers"
            )
        values.setdefault(name, []).extend(v for v in raw.split("|") if v != "")
    query = Query()
    for name, vals in values.items():
        if not vals:
            raise QueryParameterError(f"query parameter {name!r} has no value")
        if name in TIME_FILTERS:
            column, op = TIME_FILTERS[name]
            query.where.append(f"e.{column} {op} %s")
            query.params.append(_time(name, vals[-1]))
        elif name in EQUAL_FILTERS:
            forms = sorted({f for v in vals for f in _value_forms(name, v)})
            query.where.append(f"e.{EQUAL_FILTERS[name]} = any(%s)")
            query.params.append(forms)
        elif name in MATCH_FILTERS:
            _match(query, MATCH_FILTERS[name], vals)
    _options(query, values)
    digest_source = [(k, v) for k, v in sorted(values.items()) if k != "nextPageToken"]
    query.digest = hashlib.sha256(json.dumps(digest_source).encode()).hexdigest()[:16]
    if "nextPageToken" in values:
        _resume(query, values["nextPageToken"][-1])
    return query


def _options(query: Query, values: dict[str, list[str]]) -> None:
    if "orderBy" in values:
        order = values["orderBy"][-1]
        if order not in ORDER_COLUMNS:
            raise QueryParameterError(
                f"orderBy {order!r} is not supported: use eventTime or recordTime"
            )
        query.order_column = ORDER_COLUMNS[order]
        query.descending = True  # the standard's default direction once orderBy is given
    if "orderDirection" in values:
        direction = values["orderDirection"][-1]
        if direction not in ("ASC", "DESC"):
            raise QueryParameterError(f"orderDirection {direction!r}: use ASC or DESC")
        query.descending = direction == "DESC"
    if "perPage" in values:
        query.per_page = _count("perPage", values["perPage"][-1], MAX_PER_PAGE)
    if "eventCountLimit" in values and "maxEventCount" in values:
        raise QueryParameterError("eventCountLimit and maxEventCount exclude each other")
    if "eventCountLimit" in values:
        if "orderBy" not in values:
            raise QueryParameterError("eventCountLimit needs orderBy (which events come first)")
        query.event_count_limit = _count("eventCountLimit", values["eventCountLimit"][-1])
    if "maxEventCount" in values:
        query.max_event_count = _count("maxEventCount", values["maxEventCount"][-1])
    if "EXISTS_errorDeclaration" in values:
        query.where.append("e.body ? 'errorDeclaration'")
    if "EQ_transformationID" in values:
        ids = sorted({f for v in values["EQ_transformationID"] for f in (v, bare("batch", v))})
        query.where.append(
            "e.event_type = 'TransformationEvent' and coalesce(e.body->>'transformationID',"
            " e.body->>'transformation_id') = any(%s)"
        )
        query.params.append(ids)


def _resume(query: Query, token: str) -> None:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = (datetime.fromisoformat(payload["a"][0]), str(payload["a"][1]))
        served, digest = int(payload["n"]), str(payload["q"])
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise QueryParameterError(
            "nextPageToken is not one this repository gave: follow the Link header's URL"
        ) from err
    if digest != query.digest:
        raise QueryParameterError(
            "nextPageToken belongs to a query with other parameters: repeat the same "
            "parameters with it (the Link header's URL does)"
        )
    query.after, query.served = after, served


def _match(query: Query, spec: tuple[tuple[str, ...], str], values: list[str]) -> None:
    roles, holds = spec
    column = "epc" if holds == "epc" else "epc_class"
    arms: list[str] = []
    params: list[Any] = []
    for value in values:
        k = keys(value)
        if k.pattern and holds == "epc":
            arms.append("epc like %s")
            params.append(k.pattern)
        else:
            arms.append(f"{column} = %s")
            params.append(value)
        if holds == "epc" and k.sscc:
            arms.append("sscc = %s")
            params.append(k.sscc)
        elif holds == "epc" and k.gtin and k.serial:
            arms.append("(gtin = %s and serial = %s)")
            params += [k.gtin, k.serial]
        elif holds == "class" and k.gtin and k.lot:
            arms.append("(gtin = %s and lot = %s and epc_class is not null)")
            params += [k.gtin, k.lot]
        elif holds == "class" and k.gtin and k.pattern:
            arms.append("(gtin = %s and epc_class is not null)")
            params.append(k.gtin)
    query.where.append(
        "e.event_id in (select event_id from event_items where role = any(%s) and ("
        + " or ".join(arms)
        + "))"
    )
    query.params += [list(roles), *params]


def _time(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError as err:
        raise QueryParameterError(
            f"{name}={value!r} is not an ISO 8601 date-time (e.g. 2026-11-25T10:00:00Z)"
        ) from err
    if parsed.tzinfo is None:
        raise QueryParameterError(f"{name}={value!r} needs a UTC offset (e.g. ...Z or +01:00)")
    return parsed


def _count(name: str, value: str, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError as err:
        raise QueryParameterError(f"{name}={value!r} is not a whole number") from err
    if number < 1 or (maximum is not None and number > maximum):
        raise QueryParameterError(f"{name}={value} must be between 1 and {maximum or 'any'}")
    return number
