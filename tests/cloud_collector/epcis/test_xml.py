"""XML captures (EPCIS 2.0 and 1.2 bindings) round-trip to the same events as their JSON-LD
equivalents: each case folder holds a hand-written `capture.xml` and the `expected.jsonld`
the standard's JSON binding writes for it. The XML is captured, the query must give back
the JSON events, and capturing the JSON afterwards stores nothing new (the same events get
the same eventIDs, hashes included). Hostile XML is refused whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_collector.epcis import document, event_hash
from cloud_collector.epcis.document import CaptureLimits
from tests.cloud_collector.epcis.documents import capture, equivalent_form
from tests.cloud_collector.epcis.test_capture import stored_counts
from tests.conftest import RunningCollector, Services

CASES = sorted((Path(__file__).parent / "cases" / "xml").iterdir())
XML = {"Content-Type": "application/xml"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_xml_round_trips_to_the_json_ld_events(
    collector: RunningCollector, services: Services, case: Path
) -> None:
    expected_doc = json.loads((case / "expected.jsonld").read_text())
    expected = document.check(expected_doc, CaptureLimits())
    hashes = event_hash.event_ids(expected.context, expected.events)
    async with collector.client() as http:
        answer = await capture(http, (case / "capture.xml").read_bytes(), headers=XML)
        assert answer.status_code == 202, answer.text
        for event, hashed in zip(expected.events, hashes, strict=True):
            event_id = event.get("eventID", hashed)
            result = (await http.get("/epcis/events", params={"EQ_eventID": event_id})).json()
            [back] = result["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
            assert equivalent_form(back, result["@context"], True) == equivalent_form(
                event, expected_doc["@context"], True
            )
        before = await stored_counts(services)
        again = await capture(
            http, json.dumps(expected_doc), headers={"Content-Type": "application/json"}
        )
        assert again.status_code == 202, again.text
    assert (await stored_counts(services))[:2] == before[:2], "the JSON events hashed otherwise"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0"
    creationDate="2026-11-25T10:00:00Z"><EPCISBody><EventList><ObjectEvent>
<eventTime>2026-11-24T06:00:00Z</eventTime><eventTimeZoneOffset>+00:00</eventTimeZoneOffset>
<epcList><epc>urn:epc:id:sgtin:4012345.011111.&lol3;</epc></epcList><action>ADD</action>
</ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0"
    creationDate="2026-11-25T10:00:00Z"><EPCISBody><EventList><ObjectEvent>
<eventTime>2026-11-24T06:00:00Z</eventTime><eventTimeZoneOffset>+00:00</eventTimeZoneOffset>
<epcList><epc>&xxe;</epc></epcList><action>ADD</action>
</ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"""

DEEP = (
    b'<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" xmlns:ex="urn:x:">'
    + b"<ex:a>" * 10_000
    + b"</ex:a>" * 10_000
    + b"</epcis:EPCISDocument>"
)

INVALID_EVENT = b"""<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0"
    creationDate="2026-11-25T10:00:00Z"><EPCISBody><EventList><ObjectEvent>
<eventTime>2026-11-24T06:00:00Z</eventTime><eventTimeZoneOffset>+00:00</eventTimeZoneOffset>
<epcList><epc>urn:epc:id:sgtin:4012345.011111.BAD</epc></epcList><action>PEEK</action>
</ObjectEvent></EventList></EPCISBody></epcis:EPCISDocument>"""

TWICE = INVALID_EVENT.replace(b"<action>PEEK</action>", b"<action>ADD</action><action>ADD</action>")

HOSTILE = [
    ("a field twice", TWICE, "$.epcisBody.eventList[0].action: <action> appears twice"),
    ("billion laughs", BILLION_LAUGHS, "DTD"),
    ("external entity", EXTERNAL_ENTITY, "DTD"),
    ("deep nesting", DEEP, "deeper"),
    ("not well-formed", b"<epcis:EPCISDocument", "well-formed"),
    ("invalid event", INVALID_EVENT, "$.epcisBody.eventList[0].action"),
    ("not EPCIS", b"<html><body/></html>", "root element"),
]


@pytest.mark.parametrize(("case", "body", "said"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_xml_is_refused_and_nothing_stored(
    collector: RunningCollector, services: Services, case: str, body: bytes, said: str
) -> None:
    before = await stored_counts(services)
    async with collector.client() as http:
        answer = await capture(http, body, headers=XML)
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"] == "epcisException:ValidationException"
    assert said in answer.json()["detail"]
    assert await stored_counts(services) == before
