"""Event ids by the GS1 EPCIS event-hash algorithm (CBV 2.0, `ni:///sha-256;...?ver=CBV2.0`),
computed by the `epcis-event-hash-generator` library from the JSON-LD form of the events.
XML captures are converted to that same form first, so an event hashes the same whichever
binding carried it.

The library keeps module-level state (the JSON-LD document loader and a prefix table), so
it is called under a lock, with its prefix table emptied first, and its loader replaced by
one that serves only the standard's context from the library's bundled copy: a capture
never makes the collector fetch a URL.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import uuid
from functools import cache
from importlib import resources
from typing import Any

from epcis_event_hash_generator import hash_generator, json_to_py
from pyld import jsonld
from pyld.jsonld import JsonLdError

from cloud_collector.epcis.document import EPCIS_CONTEXTS

log = logging.getLogger(__name__)
_lock = threading.Lock()
_FALLBACK_NAMESPACE = uuid.UUID("6f1c1d9e-3c55-4d7a-9a55-6b1d2f0e7a11")
# The library's own copies of the standard's context, by URL.
_V2_0_0 = "e532647e8eb371379b8b0e8602d8981c8566bc60f7351f22c76a5bc865962008.jsonld"
_CONTEXT_FILES = {
    EPCIS_CONTEXTS[0]: _V2_0_0,
    EPCIS_CONTEXTS[1]: _V2_0_0,
    EPCIS_CONTEXTS[2]: "14b10c9d3e92d35f577bfc610fe5ec15aa2941124987919389d7cd9998516861.jsonld",
}


@cache
def _context_document(url: str) -> dict[str, Any]:
    text = resources.files("epcis_event_hash_generator").joinpath(_CONTEXT_FILES[url]).read_text()
    return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url,
            "document": json.loads(text)}  # fmt: skip


def _offline_loader(url: str, options: dict[str, Any] | None = None) -> Any:
    if url not in _CONTEXT_FILES:
        raise JsonLdError(
            f"context {url} is not served: only the EPCIS 2.0 context is known here",
            "jsonld.LoadDocumentError",
            code="loading document failed",
        )
    return _context_document(url)


@cache
def _standard_terms() -> frozenset[str]:
    loaded = _context_document(EPCIS_CONTEXTS[0])["document"]
    return frozenset(loaded["@context"])


def _hashable_context(context: list[Any]) -> list[Any]:
    """The context as the library can take it: prefixes only (it cannot read term
    definitions), and none that redefines a term of the standard's protected context
    (GS1's own examples do; the standard's meaning wins)."""
    out: list[Any] = []
    for entry in context:
        if isinstance(entry, str):
            out.append(entry)
            continue
        kept = {k: v for k, v in entry.items() if isinstance(v, str) and k not in _standard_terms()}
        if kept:
            out.append(kept)
    return out


def event_ids(context: list[Any], events: list[dict[str, Any]]) -> list[str]:
    """The hash id of each event (in order), whatever eventID it already has."""
    if not events:
        return []
    try:
        return _hashes(context, events)
    except Exception:  # the library fails on some valid shapes: retry event by event
        return [_one(context, event) for event in events]


def _one(context: list[Any], event: dict[str, Any]) -> str:
    try:
        return _hashes(context, [event])[0]
    except Exception:
        # epcis-event-hash-generator 1.9.3 cannot canonicalise e.g. a bizTransaction with no
        # type. Such an event still needs a stable id (a re-capture must find it again): a
        # name-based UUID of its canonical JSON and the document's prefixes.
        canonical = json.dumps([_hashable_context(context), event], sort_keys=True)
        log.warning("event-hash library failed on an event; using a name-based UUID instead")
        return f"urn:uuid:{uuid.uuid5(_FALLBACK_NAMESPACE, canonical)}"


def _hashes(context: list[Any], events: list[dict[str, Any]]) -> list[str]:
    document = {
        "@context": _hashable_context(context),
        "epcisBody": {"eventList": copy.deepcopy(events)},
    }
    with _lock:
        jsonld.set_document_loader(_offline_loader)
        json_to_py._namespaces.clear()  # prefixes of an earlier document must not leak in
        simple = json_to_py.event_list_from_epcis_document_json(document)
        prehashes = hash_generator.derive_prehashes_from_events(simple)
    if len(prehashes) != len(events):
        raise ValueError("the event-hash library could not canonicalise every event")
    return list(hash_generator.calculate_hashes_from_pre_hashes(prehashes))
