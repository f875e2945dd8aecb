"""Small EPCIS documents for the tests, and the equivalence the conformance test checks."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from cloud_collector.auth import Role
from tests.conftest import RunningCollector

CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"


def epcis_document(*events: dict[str, Any], prefixes: dict[str, str] | None = None) -> dict:
    context: list[Any] = [CONTEXT]
    if prefixes:
        context.append(prefixes)
    return {
        "@context": context,
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-11-25T10:00:00Z",
        "epcisBody": {"eventList": list(events)},
    }


def object_event(epc: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "ObjectEvent",
        "eventTime": "2026-11-20T08:00:00.000+01:00",
        "eventTimeZoneOffset": "+01:00",
        "epcList": [epc],
        "action": "OBSERVE",
        "bizStep": "receiving",
        "disposition": "in_progress",
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.0"},
        **fields,
    }


def unique_sgtin() -> str:
    return f"urn:epc:id:sgtin:4012345.011111.{uuid.uuid4().int % 10**12}"


def client(collector: RunningCollector, role: Role = Role.admin) -> httpx.AsyncClient:
    return collector.client(role)


async def capture(http: httpx.AsyncClient, doc: Any, **kw: Any) -> httpx.Response:
    if isinstance(doc, bytes | str):
        return await http.post("/epcis/capture", content=doc, **kw)
    return await http.post("/epcis/capture", json=doc, **kw)


async def events(http: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    answer = await http.get("/epcis/events", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"])


def namespaces(context: Any) -> dict[str, str]:
    """prefix -> IRI of a document's inline contexts."""
    found: dict[str, str] = {}
    for entry in context if isinstance(context, list) else [context]:
        if isinstance(entry, dict):
            found.update({k: v for k, v in entry.items() if isinstance(v, str)})
    return found


def expanded(value: Any, prefixes: dict[str, str]) -> Any:
    """Keys written with a document's prefixes, written with the full IRI instead, so two
    documents that name one namespace differently compare equal."""
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            prefix, colon, local = key.partition(":")
            if colon and prefix in prefixes:
                key = prefixes[prefix] + local
            out[key] = expanded(inner, prefixes)
        return out
    if isinstance(value, list):
        return [expanded(v, prefixes) for v in value]
    return value


def equivalent_form(event: dict[str, Any], context: Any, drop_event_id: bool) -> Any:
    """What must survive capture and query: every field, with prefixes expanded; without
    recordTime (the repository's to set) and without the eventID the repository assigned."""
    kept = {k: v for k, v in event.items() if k != "recordTime"}
    if drop_event_id:
        kept.pop("eventID", None)
    return expanded(kept, namespaces(context))
