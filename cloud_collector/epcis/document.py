"""An EPCIS 2.0 JSON-LD document checked as a whole before anything of it is stored.

Order of the checks, cheapest first, so a hostile document costs little: the body size
(read by the route), JSON syntax, nesting depth, the `@context` (only the standard's own
context by URL, plus inline prefix definitions: nothing is ever fetched), the number of
events, then the standard's JSON Schema (`schema/EPCIS-JSON-Schema-bundled.json`, GS1,
see `schema/LICENSE-GS1.txt`) and the event times. Any failure is an `InvalidDocument`
naming the JSON path and the reason; the caller stores nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError, best_match

from cloud_collector.epcis.render import OWN_URN

SCHEMA_FILE = Path(__file__).parent / "schema" / "EPCIS-JSON-Schema-bundled.json"

# The standard's context, by the URLs GS1 publishes it under (served from a local copy by
# event_hash.py: no URL in a captured document is ever fetched).
EPCIS_CONTEXTS = (
    "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
    "https://ref.gs1.org/standards/epcis/epcis-context.jsonld",  # the latest 2.0.x
    "https://gs1.github.io/EPCIS/epcis-context.jsonld",
)
EVENT_TYPES = (
    "ObjectEvent",
    "AggregationEvent",
    "TransactionEvent",
    "TransformationEvent",
    "AssociationEvent",
)
# Terms of the standard an inline context may not redefine (a partner's prefix named
# `eventTime` would change what the event means to every JSON-LD reader).
_RESERVED_TERMS = frozenset(
    {"type", "id", "eventID", "eventTime", "recordTime", "eventTimeZoneOffset", "epcisBody"}
    | set(EVENT_TYPES)
)
_TERM_DEFINITION_KEYS = frozenset({"@id", "@type"})
MAX_ID_LENGTH = 128  # eventID, transformationID: the genealogy's event and batch keys


@dataclass(frozen=True)
class CaptureLimits:
    """What one capture may carry; announced by OPTIONS /epcis/capture."""

    max_bytes: int = 16 * 1024 * 1024
    max_events: int = 10_000
    max_depth: int = 32


@dataclass
class InvalidDocument(Exception):
    """A document refused whole: `path` is a JSON path ($.epcisBody.eventList[3].eventTime)."""

    path: str
    reason: str
    status: int = 400
    kind: str = "epcisException:ValidationException"
    more: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Document:
    """The events of a valid document, the inline prefixes its context defines, and the
    master data of its header (epcisHeader.epcisMasterData.vocabularyList, as sent)."""

    events: list[dict[str, Any]]
    context: list[Any]  # the document's @context as given (standard URL + inline objects)
    namespaces: dict[str, Any]  # prefix -> IRI or term definition, from the inline objects
    vocabularies: list[dict[str, Any]] = field(default_factory=list)


@cache
def _validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return Draft7Validator(schema)


def parse_json(body: bytes, limits: CaptureLimits) -> Document:
    try:
        data = json.loads(body)
    except RecursionError as err:
        raise InvalidDocument("$", f"nested deeper than {limits.max_depth} levels") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidDocument("$", f"not JSON: {err}") from err
    except ValueError as err:  # an integer longer than Python's int-to-str limit (4300 digits)
        raise InvalidDocument("$", f"a number in the document is too long: {err}") from err
    return check(data, limits)


def check(data: Any, limits: CaptureLimits) -> Document:
    """The document's events, or InvalidDocument saying which path is wrong and why."""
    check_shape(data, limits.max_depth)
    if not isinstance(data, dict):
        raise InvalidDocument("$", "an EPCISDocument or EPCISQueryDocument object is expected")
    kind = data.get("type")
    if kind not in ("EPCISDocument", "EPCISQueryDocument"):
        raise InvalidDocument(
            "$.type", f"{kind!r} cannot be captured: send an EPCISDocument or EPCISQueryDocument"
        )
    context, namespaces = check_context(data.get("@context"))
    events = event_list(data)
    if not isinstance(events, list):
        raise InvalidDocument("$.epcisBody", "no eventList")
    if len(events) > limits.max_events:
        raise InvalidDocument(
            "$.epcisBody.eventList",
            f"{len(events)} events, more than the {limits.max_events} one capture may carry: "
            "split the document",
            status=413,
            kind="epcisException:CaptureLimitExceededException",
        )
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        worst = best_match(errors)
        assert worst is not None
        raise InvalidDocument(
            _deepest(worst).json_path,
            _reason(_deepest(worst), errors),
            more=[{"path": e.json_path, "reason": e.message} for e in errors[:10]],
        )
    for i, event in enumerate(events):
        where = f"{_events_path(data)}[{i}]"
        if event.get("type") not in EVENT_TYPES:
            raise InvalidDocument(
                f"{where}.type",
                f"event type {event.get('type')!r} is not supported: use one of "
                + ", ".join(EVENT_TYPES),
            )
        for name in ("eventID", "transformationID"):
            if len(str(event.get(name, ""))) > MAX_ID_LENGTH:
                raise InvalidDocument(
                    f"{where}.{name}",
                    f"longer than {MAX_ID_LENGTH} characters: the genealogy keys events and "
                    "batches by it; use a shorter URI (e.g. urn:uuid:...)",
                )
            if str(event.get(name, "")).startswith(OWN_URN):
                raise InvalidDocument(
                    f"{where}.{name}",
                    f"{event[name]!r}: ids under {OWN_URN} are this repository's names for "
                    "its own events and batches, not to be captured; use an id of your own "
                    "(e.g. urn:uuid:...)",
                )
        _check_parties(event, where)
        for name in ("eventTime", "recordTime"):
            if name in event:
                parse_time(event[name], f"{where}.{name}")
        if "errorDeclaration" in event:
            parse_time(
                event["errorDeclaration"].get("declarationTime"),
                f"{where}.errorDeclaration.declarationTime",
            )
    return Document(events, context, namespaces, vocabulary_list(data))


def _check_parties(event: dict[str, Any], where: str) -> None:
    # Imported here: parties.py raises this module's InvalidDocument.
    from cloud_collector.epcis import parties

    parties.of_event(event, where)


def parse_time(value: Any, path: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError as err:
        raise InvalidDocument(path, f"{value!r} is not an ISO 8601 date-time") from err
    if parsed.tzinfo is None:
        raise InvalidDocument(path, f"{value!r} has no UTC offset (e.g. 2026-11-25T10:00:00Z)")
    return parsed


def event_list(data: dict[str, Any]) -> Any:
    body = data.get("epcisBody")
    if not isinstance(body, dict):
        raise InvalidDocument("$.epcisBody", "missing or not an object")
    if data.get("type") == "EPCISQueryDocument":
        results = body.get("queryResults")
        found = results.get("resultsBody") if isinstance(results, dict) else None
        return found.get("eventList") if isinstance(found, dict) else None
    if "event" in body and "eventList" not in body:
        return [body["event"]]
    return body.get("eventList")


def vocabulary_list(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The header's master data (the schema has checked its shape): vocabularies of
    {type, vocabularyElementList: [{id, attributes, children}]}."""
    header = data.get("epcisHeader")
    master = header.get("epcisMasterData") if isinstance(header, dict) else None
    found = master.get("vocabularyList") if isinstance(master, dict) else None
    return found if isinstance(found, list) else []


def _events_path(data: dict[str, Any]) -> str:
    if data.get("type") == "EPCISQueryDocument":
        return "$.epcisBody.queryResults.resultsBody.eventList"
    return "$.epcisBody.eventList"


def _deepest(error: ValidationError) -> ValidationError:
    """The most specific cause inside anyOf/oneOf/if-then, which names the real field."""
    while error.context:
        if _alternatives(error):
            break  # every alternative is about this same value: say them all
        inner = best_match(error.context)
        if inner is None or len(inner.absolute_path) < len(error.absolute_path):
            break
        error = inner
    return error


def _alternatives(error: ValidationError) -> bool:
    return error.validator in ("anyOf", "oneOf") and all(
        list(c.absolute_path) == list(error.absolute_path) for c in error.context or []
    )


def _leaves(errors: list[ValidationError]) -> list[ValidationError]:
    found: list[ValidationError] = []
    stack = list(errors)
    while stack:
        error = stack.pop()
        if error.context:
            stack.extend(error.context)
        else:
            found.append(error)
    return found


def _reason(error: ValidationError, errors: list[ValidationError]) -> str:
    """Why, in the most telling words: an enumeration of what is allowed says more than
    one of the patterns a value missed."""
    if isinstance(error.instance, str) and error.instance.startswith("urn:epcglobal:cbv:"):
        word = error.instance.rsplit(":", 1)[-1]
        return (
            f"{error.instance!r}: the JSON binding writes CBV values as bare words "
            f"({word!r}) or https://ref.gs1.org/cbv/ URIs, not as URNs"
        )
    for leaf in _leaves(errors):
        if leaf.json_path == error.json_path and leaf.validator == "enum":
            return leaf.message
    if _alternatives(error):
        tried = sorted(
            {c.message.replace(repr(error.instance), "").strip() for c in error.context or []}
        )
        return f"{error.instance!r} is none of the allowed forms: " + "; ".join(tried[:6])
    return error.message


def check_shape(data: Any, max_depth: int) -> None:
    """Nesting within `max_depth`, and only finite numbers: Python's json reads NaN,
    Infinity and 1e400 (as infinity), which JSON proper and PostgreSQL's jsonb refuse."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "$")]
    while stack:
        value, depth, path = stack.pop()
        if depth > max_depth:
            raise InvalidDocument(path, f"nested deeper than {max_depth} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidDocument(path, f"{value} is not a finite number")
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{path}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value))


def check_context(context: Any) -> tuple[list[Any], dict[str, Any]]:
    """The context as a list, and its inline prefixes. Only the standard's context may be
    named by URL (never fetched); inline objects may define prefixes (prefix -> IRI) and
    simple term definitions ({"@id": ..., "@type": ...}) for extension fields."""
    if context is None:
        raise InvalidDocument(
            "$['@context']", f"missing: the standard's context {EPCIS_CONTEXTS[0]} is required"
        )
    entries = context if isinstance(context, list) else [context]
    namespaces: dict[str, Any] = {}
    named_standard = False
    for i, entry in enumerate(entries):
        where = f"$['@context'][{i}]"
        if isinstance(entry, str):
            if entry not in EPCIS_CONTEXTS:
                raise InvalidDocument(
                    where,
                    f"unknown context {entry!r}: only the EPCIS 2.0 context "
                    f"({EPCIS_CONTEXTS[0]}) may be referenced by URL; define your own prefixes "
                    'inline, e.g. {"ex": "https://example.com/epcis/"}',
                )
            named_standard = True
            continue
        if not isinstance(entry, dict):
            raise InvalidDocument(where, "a context entry must be a URL or an object")
        for term, definition in entry.items():
            _check_term(f"{where}['{term}']", term, definition)
            namespaces[term] = definition
    if not named_standard:
        raise InvalidDocument(
            "$['@context']", f"the standard's context {EPCIS_CONTEXTS[0]} is required"
        )
    return entries, namespaces


def _check_term(where: str, term: str, definition: Any) -> None:
    if term.startswith("@") or term in _RESERVED_TERMS:
        raise InvalidDocument(
            where, f"an inline context may only define prefixes and extension terms, not {term!r}"
        )
    if isinstance(definition, str):
        if ":" not in definition:
            raise InvalidDocument(where, f"{definition!r} is not an absolute IRI")
        return
    if (
        isinstance(definition, dict)
        and definition
        and set(definition) <= _TERM_DEFINITION_KEYS
        and all(isinstance(v, str) for v in definition.values())
    ):
        return
    raise InvalidDocument(
        where,
        "unknown context entry: a term maps to an IRI or to {'@id': IRI, '@type': IRI} only",
    )
