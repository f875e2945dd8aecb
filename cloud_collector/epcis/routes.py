"""The EPCIS 2.0 REST binding, the part this repository serves: capture (JSON-LD, and XML
in the 2.0 and 1.2 bindings), capture jobs, and the event query."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from psycopg import AsyncConnection
from starlette.concurrency import run_in_threadpool

from cloud_collector.auth import Principal, Role, require
from cloud_collector.endpoints import Settings, connected, connection, primary_connection
from cloud_collector.epcis import (
    document,
    event_hash,
    genealogy_feed,
    master_data,
    query,
    results,
    store,
    xml_binding,
)
from cloud_collector.epcis.document import CaptureLimits, InvalidDocument
from cloud_collector.epcis.problems import Problem

VERSION_HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
JSON_TYPES = ("application/json", "application/ld+json")
XML_TYPES = ("application/xml", "text/xml")


# The capture body as the OpenAPI document describes it (the route reads the raw bytes: JSON
# or XML, checked by document.py and xml_binding.py against the EPCIS 2.0 schema), so that
# clients and fuzzers know what to send.
_EVENT_LIST = {"type": "array", "items": {"type": "object"}}
CAPTURE_BODY: dict[str, Any] = {
    "required": True,
    "description": "An EPCISDocument (or EPCISQueryDocument) in JSON-LD, or in XML (EPCIS "
    "2.0 or 1.2 binding)",
    "content": {
        media: {
            "schema": {
                "type": "object",
                "required": ["@context", "type", "schemaVersion", "creationDate", "epcisBody"],
                "properties": {
                    "@context": {},
                    "type": {"enum": ["EPCISDocument", "EPCISQueryDocument"]},
                    "schemaVersion": {"type": "string"},
                    "creationDate": {"type": "string", "format": "date-time"},
                    "epcisBody": {
                        "type": "object",
                        "properties": {"eventList": _EVENT_LIST},
                    },
                },
            }
        }
        for media in JSON_TYPES
    }
    | {media: {"schema": {"type": "string"}} for media in XML_TYPES},
}


def _limit_headers(limits: CaptureLimits) -> dict[str, str]:
    return {
        **VERSION_HEADERS,
        "GS1-EPCIS-Capture-Limit": str(limits.max_events),
        "GS1-EPCIS-Capture-File-Size-Limit": str(limits.max_bytes),
        "GS1-Capture-Error-Behaviour": "rollback",
    }


async def _body(request: Request, limits: CaptureLimits) -> bytes:
    """The request body, refused as soon as it passes the size limit (whatever
    Content-Length claims)."""
    too_large = Problem(
        413,
        "epcisException:CaptureLimitExceededException",
        f"the document is larger than {limits.max_bytes} bytes: split it into several captures",
    )
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(
    body: bytes, media_type: str, limits: CaptureLimits
) -> tuple[document.Document, list[str], list[master_data.Element]]:
    parsed = (
        xml_binding.parse(body, limits)
        if media_type in XML_TYPES
        else document.parse_json(body, limits)
    )
    vocabulary = master_data.elements(parsed.vocabularies, parsed.namespaces)
    need = [e for e in parsed.events if "eventID" not in e]
    hashes = iter(event_hash.event_ids(parsed.context, need))
    ids = [e["eventID"] if "eventID" in e else next(hashes) for e in parsed.events]
    return parsed, ids, vocabulary


def _refused(err: InvalidDocument) -> Problem:
    return Problem(
        err.status, err.kind, str(err), path=err.path, reason=err.reason, errors=err.more
    )


def _outside(principal: Principal, events: list[dict[str, Any]]) -> Problem | None:
    """A partner captures only events at its own locations (read point or business
    location, cloud_collector/auth.py Partner)."""
    if principal.partner is None:
        return None
    for i, event in enumerate(events):
        read_point = (event.get("readPoint") or {}).get("id")
        location = (event.get("bizLocation") or {}).get("id")
        if not principal.partner.may_capture_event(read_point, location):
            return Problem(
                403,
                "epcisException:SecurityException",
                f"event {i} is at {location or read_point or 'no location'}, not at a location "
                f"of partner {principal.partner.partner_id!r}: a partner captures only events "
                "at its own locations (an admin adds locations to the partner)",
            )
    return None


def _capture_limits(settings: Settings) -> CaptureLimits:
    """What one capture may carry here: its bytes are TRACE_API_CAPTURE_BODY_BYTES."""
    return CaptureLimits(max_bytes=settings.api_capture_body_bytes)


Limits = Annotated[CaptureLimits, Depends(_capture_limits)]

# Capture: role importer, or partner at its own locations; query: reader, or partner (our
# shipments to it and what it captured, query.Query.only_what_partner_sees). Each route
# declares its principal before its connection: the key is checked before a connection is
# taken (endpoints.connection refuses otherwise).
capturer = require(Role.importer, Role.partner)
reader = require(Role.reader, Role.partner)
anyone = require(Role.reader, Role.importer, Role.partner)

router = APIRouter(prefix="/epcis", tags=["EPCIS 2.0"])


@router.options("/capture", dependencies=[Depends(capturer)])
async def capture_options(limits: Limits) -> Response:
    """What a capture may carry (events, bytes) and how errors are handled."""
    return Response(status_code=204, headers={**_limit_headers(limits), "Allow": "OPTIONS, POST"})


@router.post(
    "/capture",
    status_code=202,
    response_class=Response,
    openapi_extra={"requestBody": CAPTURE_BODY},
)
async def capture(
    request: Request,
    limits: Limits,
    principal: Principal = Depends(capturer),  # noqa: B008
) -> Response:
    """Capture an EPCISDocument or EPCISQueryDocument (JSON-LD, or XML in the EPCIS 2.0
    or 1.2 binding). All or nothing: an invalid document is refused with a problem
    document naming the path and reason, and nothing of it is stored. 202 with the
    capture job's URL in Location."""
    try:
        behaviour = request.headers.get("GS1-Capture-Error-Behaviour", "rollback")
        if behaviour != "rollback":
            raise Problem(
                400,
                "epcisException:ValidationException",
                f"GS1-Capture-Error-Behaviour {behaviour!r} is not supported: captures here "
                "are all or nothing (rollback); omit the header",
            )
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in JSON_TYPES + XML_TYPES:
            raise Problem(
                415,
                "epcisException:ValidationException",
                f"content type {media_type or '(none)'!r} is not accepted: send "
                "application/json (or application/ld+json) or application/xml",
            )
        body = await _body(request, limits)
        try:
            parsed, ids, vocabulary = await run_in_threadpool(_parse, body, media_type, limits)
        except InvalidDocument as err:
            raise _refused(err) from err
        if refused := _outside(principal, parsed.events):
            raise refused
        if not_its_own := master_data.outside(principal.partner, vocabulary):
            raise _refused(not_its_own)
        created = datetime.now(UTC)
        try:
            # A connection only now: checking a large document takes seconds, and the
            # pool is shared with trace queries.
            async with connected(request) as conn, conn.transaction():
                capture_id = await store.capture(
                    conn, parsed.events, ids, parsed.namespaces, created, principal, vocabulary
                )
        except genealogy_feed.NotThePartners as err:
            raise Problem(403, "epcisException:SecurityException", str(err)) from err
        except InvalidDocument as err:  # found while linking it into the genealogy
            raise _refused(err) from err
    except Problem as problem:
        return problem.response(VERSION_HEADERS)
    return Response(
        status_code=202,
        headers={**_limit_headers(limits), "Location": f"/epcis/capture/{capture_id}"},
    )


@router.get("/capture/{capture_id}")
async def capture_job(
    capture_id: str,
    principal: Principal = Depends(anyone),  # noqa: B008
    # The job this API just wrote: a lagging read standby may not have it yet.
    conn: AsyncConnection = Depends(primary_connection),  # noqa: B008
) -> Response:
    """The capture job: running, success, errors (captures finish before 202 here)."""
    job = await store.job(conn, capture_id, principal.partner_id)
    if job is None:
        return Problem(
            404,
            "epcisException:NoSuchResourceException",
            f"no capture job {capture_id!r}: use the Location header POST /epcis/capture gave",
        ).response(VERSION_HEADERS)
    return JSONResponse(job.model_dump(), headers=VERSION_HEADERS)


@router.get("/events")
async def events(
    request: Request,
    principal: Principal = Depends(reader),  # noqa: B008
    conn: AsyncConnection = Depends(connection),  # noqa: B008
) -> Response:
    """EPCIS events, ours and captured ones, filtered by the SimpleEventQuery parameters
    (eventType, GE_/LT_eventTime, GE_/LT_recordTime, EQ_action, EQ_bizStep,
    EQ_disposition, EQ_readPoint, EQ_bizLocation, EQ_transformationID, EQ_eventID,
    MATCH_epc, MATCH_parentID, MATCH_inputEPC, MATCH_outputEPC, MATCH_anyEPC,
    MATCH_epcClass, MATCH_inputEPCClass, MATCH_outputEPCClass, MATCH_anyEPCClass,
    EXISTS_errorDeclaration, orderBy, orderDirection, eventCountLimit, maxEventCount,
    perPage up to 1000, nextPageToken) as an EPCISQueryDocument; the next page's URL is
    in the Link header (rel="next")."""
    items = list(request.query_params.multi_items())
    try:
        parsed = query.parse(items)
        if principal.partner is not None:
            parsed.only_what_partner_sees(principal.partner.partner_id)
    except query.QueryParameterError as err:
        return Problem(400, "epcisException:QueryParameterException", str(err)).response(
            VERSION_HEADERS
        )
    try:
        found = await results.page(conn, parsed)
    except results.TooLarge as err:
        return Problem(413, "epcisException:QueryTooLargeException", str(err)).response(
            VERSION_HEADERS
        )
    headers = dict(VERSION_HEADERS)
    if found.next_token:
        kept = [(k, v) for k, v in items if k != "nextPageToken"]
        url = request.url.replace(query=urlencode([*kept, ("nextPageToken", found.next_token)]))
        headers["Link"] = f'<{url}>; rel="next"'
    return JSONResponse(found.document, headers=headers)


@router.get("/events/{event_id:path}")
async def event(
    event_id: str,
    principal: Principal = Depends(reader),  # noqa: B008
    conn: AsyncConnection = Depends(connection),  # noqa: B008
) -> Response:
    """One event by its eventID (URL-encoded), with its @context."""
    where, params = query.one_event(event_id)
    parsed = query.Query(where=[where], params=params, per_page=1)
    if principal.partner is not None:
        parsed.only_what_partner_sees(principal.partner.partner_id)
    found = (await results.page(conn, parsed)).document
    listed = found["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    if not listed:
        return Problem(
            404,
            "epcisException:NoSuchResourceException",
            f"no event {event_id!r}: GET /epcis/events?MATCH_anyEPC=... finds events by EPC",
        ).response(VERSION_HEADERS)
    return JSONResponse({"@context": found["@context"], **listed[0]}, headers=VERSION_HEADERS)
