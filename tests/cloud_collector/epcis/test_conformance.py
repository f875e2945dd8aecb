"""Every example of the GS1 EPCIS 2.0 folder is captured and comes back from the query
endpoint equivalent to what went in, and the answer validates against GS1's JSON Schema.

Equivalent: the same events with the same fields and values, once each side's context
prefixes are expanded to full IRIs; recordTime is the repository's to set; an event sent
without eventID comes back with the GS1 event hash as its id.

GS1's examples reuse some eventIDs for events that differ (copied examples). A repository
keeps the first event captured under an id (re-capture is idempotent), except that an
error declaration repeats the event it declares with the same id and is recorded on it
(EPCIS 2.0, 7.4.1.2). The expected content of each id follows the same two rules, in the
order the examples are captured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloud_collector.epcis import document, event_hash
from cloud_collector.epcis.document import SCHEMA_FILE, CaptureLimits
from tests.cloud_collector.epcis.documents import capture, equivalent_form
from tests.conftest import RunningCollector

EXAMPLES = Path("/work/shared/epcis-2.0/examples")
if not EXAMPLES.is_dir():  # the checkout's sibling shared/ folder
    EXAMPLES = Path(__file__).resolve().parents[4] / "shared" / "epcis-2.0" / "examples"


def example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.jsonld"))


def test_the_example_folder_is_there() -> None:
    assert len(example_files()) == 47, EXAMPLES


async def test_every_gs1_example_round_trips(collector: RunningCollector) -> None:
    from jsonschema import Draft7Validator

    validator = Draft7Validator(json.loads(SCHEMA_FILE.read_text()))
    expected: dict[str, Any] = {}  # eventID -> the form the query must give back
    failures: list[str] = []
    async with collector.client() as http:
        for path in example_files():
            name = str(path.relative_to(EXAMPLES))
            raw = path.read_bytes()
            answer = await capture(http, raw, headers={"Content-Type": "application/ld+json"})
            if answer.status_code != 202:
                failures.append(f"{name}: capture answered {answer.status_code} {answer.text}")
                continue
            doc = json.loads(raw)
            parsed = document.parse_json(raw, CaptureLimits())
            hashes = event_hash.event_ids(parsed.context, parsed.events)
            for event, hashed in zip(parsed.events, hashes, strict=True):
                event_id = event.get("eventID", hashed)
                form = equivalent_form(event, doc["@context"], drop_event_id=True)
                previous = expected.get(event_id)
                declares = "errorDeclaration" in event and (
                    previous is not None and "errorDeclaration" not in previous[1]
                )
                if previous is None or declares:
                    expected[event_id] = (name, form, "eventID" not in event, hashed)
        for event_id, (name, form, assigned, hashed) in expected.items():
            answer = await http.get("/epcis/events", params={"EQ_eventID": event_id})
            if answer.status_code != 200:
                failures.append(f"{name} {event_id}: query answered {answer.status_code}")
                continue
            result = answer.json()
            schema_errors = [e.message for e in validator.iter_errors(result)]
            if schema_errors:
                failures.append(f"{name}: the query document is not valid: {schema_errors[:3]}")
            found = result["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
            if len(found) != 1:
                failures.append(f"{name} {event_id}: {len(found)} events came back")
                continue
            back = found[0]
            if back.get("eventID") != event_id or (assigned and event_id != hashed):
                failures.append(f"{name}: eventID {back.get('eventID')} for {event_id}")
            if "recordTime" not in back:
                failures.append(f"{name} {event_id}: no recordTime")
            got = equivalent_form(back, result["@context"], drop_event_id=True)
            if got != form:
                failures.append(
                    f"{name} {event_id}: differs\n in: {json.dumps(form, sort_keys=True)}"
                    f"\nout: {json.dumps(got, sort_keys=True)}"
                )
    assert not failures, "\n".join(failures)
    assert len(expected) == 48  # 56 events, 8 of them reusing an eventID
