"""POST /epcis/capture through the HTTP API on the real database: answers as the REST
binding says (202 + Location, the capture job, problem documents), all or nothing, eventIDs
assigned by the GS1 event hash, re-capture idempotent, hostile documents refused whole."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from cloud_collector.auth import Role
from cloud_collector.epcis.document import CaptureLimits
from tests.cloud_collector.epcis.documents import (
    CONTEXT,
    capture,
    epcis_document,
    events,
    object_event,
    unique_sgtin,
)
from tests.conftest import RunningCollector, Services

LIMITS = CaptureLimits()


# Counts of what captures store. Only captured rows: the collector fixture's consumer also
# ingests whatever edges publish on the shared broker while the tests run.
_STORED = """
select (select count(*) from trace_events where body_format = 'epcis'),
       (select count(*) from event_items i join trace_events e using (event_id)
        where e.body_format = 'epcis'),
       (select count(*) from epcis_capture_jobs)
"""


async def stored_counts(services: Services) -> tuple[int, int, int]:
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        row = await (await conn.execute(_STORED)).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


async def test_capture_answers_202_with_the_job_and_the_event_is_queryable(
    collector: RunningCollector,
) -> None:
    epc = unique_sgtin()
    async with collector.client() as http:
        answer = await capture(http, epcis_document(object_event(epc)))
        assert answer.status_code == 202, answer.text
        assert answer.headers["GS1-EPCIS-Version"] == "2.0.0"
        location = answer.headers["Location"]
        assert location.startswith("/epcis/capture/")
        job = (await http.get(location)).json()
        assert job["running"] is False
        assert job["success"] is True
        assert job["captureErrorBehaviour"] == "rollback"
        assert job["errors"] == []
        assert job["captureID"] == location.rsplit("/", 1)[1]
        found = await events(http, MATCH_epc=epc)
    assert len(found) == 1
    assert found[0]["eventID"].startswith("ni:///sha-256;")
    assert found[0]["eventID"].endswith("?ver=CBV2.0")
    assert found[0]["epcList"] == [epc]
    assert "recordTime" in found[0]


async def test_recapture_is_idempotent_by_event_id(
    collector: RunningCollector, services: Services
) -> None:
    epc = unique_sgtin()
    with_id = object_event(epc, eventID=f"urn:uuid:{epc[-12:]}-0000-4000-8000-000000000000")
    without_id = object_event(epc, bizStep="shipping")
    doc = epcis_document(with_id, without_id)
    async with collector.client() as http:
        assert (await capture(http, doc)).status_code == 202
        before = await stored_counts(services)
        assert (await capture(http, doc)).status_code == 202
        after = await stored_counts(services)
        found = await events(http, MATCH_epc=epc)
    assert after[:2] == before[:2], "a re-capture must store nothing new"
    assert after[2] == before[2] + 1, "it is still a capture job of its own"
    assert sorted(e["bizStep"] for e in found) == ["receiving", "shipping"]


async def test_error_declaration_is_recorded_on_the_event_it_declares(
    collector: RunningCollector,
) -> None:
    epc = unique_sgtin()
    event = object_event(epc, eventID=f"urn:uuid:{epc[-12:]}-0000-4000-8000-00000000000e")
    declared = {
        **event,
        "errorDeclaration": {"declarationTime": "2026-11-21T09:00:00Z", "reason": "incorrect_data"},
    }
    async with collector.client() as http:
        assert (await capture(http, epcis_document(event))).status_code == 202
        assert (await capture(http, epcis_document(declared))).status_code == 202
        found = await events(http, MATCH_epc=epc, EXISTS_errorDeclaration="true")
    assert len(found) == 1
    assert found[0]["errorDeclaration"]["reason"] == "incorrect_data"


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"ex:leaf": "x"}
    for _ in range(levels):
        value = {"ex:nested": value}
    return value


# (case, document or raw body, content type, status, exception type, path in the answer)
HOSTILE: list[tuple[str, Any, str, int, str, str | None]] = [
    (
        "wrong type",
        lambda epc: epcis_document(object_event(epc, eventTime=20261120)),
        "application/json",
        400,
        "epcisException:ValidationException",
        "$.epcisBody.eventList[0].eventTime",
    ),
    (
        "bad date",
        lambda epc: epcis_document(object_event(epc, eventTime="yesterday")),
        "application/json",
        400,
        "epcisException:ValidationException",
        "$.epcisBody.eventList[0].eventTime",
    ),
    (
        "one bad event spoils the document",
        lambda epc: epcis_document(object_event(epc), object_event(epc, action="PEEK")),
        "application/json",
        400,
        "epcisException:ValidationException",
        "$.epcisBody.eventList[1].action",
    ),
    (
        "unknown remote context",
        lambda epc: {
            **epcis_document(object_event(epc)),
            "@context": [CONTEXT, "https://evil.example.com/context.jsonld"],
        },
        "application/json",
        400,
        "epcisException:ValidationException",
        "$['@context'][1]",
    ),
    (
        "context redefines a term of the standard",
        lambda epc: epcis_document(
            object_event(epc), prefixes={"eventTime": "https://evil.example.com/"}
        ),
        "application/json",
        400,
        "epcisException:ValidationException",
        "$['@context'][1]['eventTime']",
    ),
    (
        "context with a keyword",
        lambda epc: epcis_document(
            object_event(epc), prefixes={"@import": "https://evil.example.com/c.jsonld"}
        ),
        "application/json",
        400,
        "epcisException:ValidationException",
        "$['@context'][1]['@import']",
    ),
    (
        "no context",
        lambda epc: {k: v for k, v in epcis_document(object_event(epc)).items() if k != "@context"},
        "application/json",
        400,
        "epcisException:ValidationException",
        "$['@context']",
    ),
    (
        "deep nesting",
        lambda epc: epcis_document(
            object_event(epc, **{"ex:deep": _deep(LIMITS.max_depth)}),
            prefixes={"ex": "https://example.com/ex/"},
        ),
        "application/json",
        400,
        "epcisException:ValidationException",
        None,
    ),
    (
        "nesting deeper than the JSON parser goes",
        lambda epc: b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "application/json",
        400,
        "epcisException:ValidationException",
        "$",
    ),
    (
        "too many events",
        lambda epc: epcis_document(*[object_event(epc)] * (LIMITS.max_events + 1)),
        "application/json",
        413,
        "epcisException:CaptureLimitExceededException",
        "$.epcisBody.eventList",
    ),
    (
        "too many bytes",
        lambda epc: epcis_document(
            object_event(epc, **{"ex:blob": "x" * LIMITS.max_bytes}),
            prefixes={"ex": "https://example.com/ex/"},
        ),
        "application/json",
        413,
        "epcisException:CaptureLimitExceededException",
        None,
    ),
    (
        "eventID too long for the genealogy",
        lambda epc: epcis_document(object_event(epc, eventID="urn:x:" + "a" * 200)),
        "application/json",
        400,
        "epcisException:ValidationException",
        "$.epcisBody.eventList[0].eventID",
    ),
    (
        "query document without results",
        lambda epc: {
            "@context": [CONTEXT],
            "type": "EPCISQueryDocument",
            "epcisBody": {"queryResults": {"resultsBody": "none"}},
        },
        "application/json",
        400,
        "epcisException:ValidationException",
        "$.epcisBody",
    ),
    (
        "not JSON",
        lambda epc: b"{not json",
        "application/json",
        400,
        "epcisException:ValidationException",
        "$",
    ),
    (
        "an event, not a document",
        lambda epc: {"@context": [CONTEXT], **object_event(epc)},
        "application/json",
        400,
        "epcisException:ValidationException",
        "$.type",
    ),
    (
        "unsupported media type",
        lambda epc: b"epc,time",
        "text/csv",
        415,
        "epcisException:ValidationException",
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "content_type", "status", "kind", "path"),
    HOSTILE,
    ids=[h[0] for h in HOSTILE],
)
async def test_hostile_documents_are_refused_whole_and_nothing_is_stored(
    collector: RunningCollector,
    services: Services,
    case: str,
    make: Any,
    content_type: str,
    status: int,
    kind: str,
    path: str | None,
) -> None:
    epc = unique_sgtin()
    doc = make(epc)
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    before = await stored_counts(services)
    async with collector.client() as http:
        answer = await capture(http, body, headers={"Content-Type": content_type})
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"] == kind
        assert problem["status"] == status
        assert problem["detail"]
        if path is not None:
            assert problem["path"] == path, problem
        assert await events(http, MATCH_epc=epc) == []
    assert await stored_counts(services) == before, f"{case}: something was stored"


async def test_an_event_the_genealogy_cannot_take_is_refused_after_all(
    collector: RunningCollector, services: Services
) -> None:
    """Found only while linking the lots (our batches take at most 10,000 inputs): the
    events already written in the transaction go with it."""
    epc = unique_sgtin()
    fine = object_event(epc)
    huge = {
        "type": "TransformationEvent",
        "eventTime": "2026-11-20T08:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "inputEPCList": [f"{epc}{i}" for i in range(10_001)],
        "outputEPCList": [epc],
    }
    before = await stored_counts(services)
    async with collector.client() as http:
        answer = await capture(http, epcis_document(fine, huge))
        assert await events(http, MATCH_anyEPC=epc) == []
    assert answer.status_code == 400, answer.text
    assert answer.json()["path"] == "$.epcisBody.eventList[1]"
    assert "genealogy" in answer.json()["reason"]
    assert await stored_counts(services) == before


async def test_capture_needs_an_importer_or_partner_key(collector: RunningCollector) -> None:
    doc = epcis_document(object_event(unique_sgtin()))
    async with collector.client(Role.reader) as http:
        assert (await capture(http, doc)).status_code == 403
        http.headers.pop("Authorization")
        assert (await capture(http, doc)).status_code == 401


async def test_options_announce_the_limits(collector: RunningCollector) -> None:
    async with collector.client() as http:
        answer = await http.options("/epcis/capture")
    assert answer.status_code == 204
    assert answer.headers["GS1-EPCIS-Capture-Limit"] == str(LIMITS.max_events)
    assert answer.headers["GS1-EPCIS-Capture-File-Size-Limit"] == str(LIMITS.max_bytes)


REASONS = [
    ({"action": "PEEK"}, "'PEEK' is not one of ['OBSERVE', 'ADD', 'DELETE']"),
    ({"bizStep": "urn:epcglobal:cbv:bizstep:receiving"}, "bare words ('receiving')"),
    ({"quantityList": [{"epcClass": "urn:epc:class:lgtin:4012345.011111.L", "quantity": "a"}]},
     "'a' is not of type 'number'"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "reason"), REASONS, ids=[r[1][:20] for r in REASONS])
async def test_a_refusal_says_what_would_be_right(
    collector: RunningCollector, fields: dict[str, Any], reason: str
) -> None:
    async with collector.client() as http:
        answer = await capture(http, epcis_document(object_event(unique_sgtin(), **fields)))
    assert answer.status_code == 400
    assert reason in answer.json()["reason"]


@pytest.mark.parametrize("field", ["eventID", "transformationID"])
async def test_ids_under_our_own_urn_are_refused(
    collector: RunningCollector, services: Services, field: str
) -> None:
    """urn:x-trace:event:{id} is how we write our own event {id}: a captured event by that
    name would be a second event answering to it."""
    epc = unique_sgtin()
    event = {
        "type": "TransformationEvent",
        "eventTime": "2026-11-20T08:00:00Z",
        "eventTimeZoneOffset": "+00:00",
        "inputEPCList": [epc],
        "outputEPCList": [f"{epc}9"],
        field: f"urn:x-trace:{'event' if field == 'eventID' else 'batch'}:edge-1-0",
    }
    before = await stored_counts(services)
    async with collector.client(Role.importer) as http:
        answer = await capture(http, epcis_document(object_event(epc), event))
    assert answer.status_code == 400, answer.text
    assert answer.json()["path"] == f"$.epcisBody.eventList[1].{field}"
    assert "urn:x-trace:" in answer.json()["reason"]
    assert await stored_counts(services) == before


async def test_capture_keeps_only_what_is_read(services: Services) -> None:
    """A capture job is finished, successful and without errors when it is stored: the answer
    says so without columns for it; who captured an event is on the event (a partner's)."""
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        cur = await conn.execute(
            "select table_name, column_name from information_schema.columns"
            " where table_name in ('epcis_capture_jobs', 'trace_events')"
        )
        columns = await cur.fetchall()
    jobs = {c for t, c in columns if t == "epcis_capture_jobs"}
    events_columns = {c for t, c in columns if t == "trace_events"}
    assert jobs == {"capture_id", "created_at", "finished_at", "captured_by", "partner_id"}
    assert "event_id_assigned" not in events_columns
    assert {"capture_id", "partner_id"} <= events_columns
