"""GET /epcis/events: the SimpleEventQuery parameters, ordering and pages, refused
parameters; and our own edges' events (receiving, a batch with its readings, shipping)
answered in the same EPCIS shape as captured ones."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import psycopg
import pytest
from jsonschema import Draft7Validator

from cloud_collector.auth import Role
from cloud_collector.epcis.document import SCHEMA_FILE
from cloud_collector.ingest import ingest
from protocols.gs1 import gtin_of_epc as gtin
from protocols.mqtt import topics
from tests.cloud_collector.epcis.documents import capture, epcis_document, equivalent_form, events
from tests.cloud_collector.plant import FLOUR_GTIN, T0, Plant, lot_item
from tests.conftest import RunningCollector, Services

VALIDATOR = Draft7Validator(json.loads(SCHEMA_FILE.read_text()))


_SCENE_DAYS = itertools.count()  # the test database is created afresh for each session


class Scene:
    """Six events of every type at times of their own, with EPCs no other test uses."""

    def __init__(self) -> None:
        self.item_ref = f"0{random.randrange(10**5):05d}"  # indicator 0 + 5 digits
        self.prefix = "4012345"
        # A day of its own: two scenes on one day would see each other's events in a window
        # (random days collided in about one run out of seven).
        self.t0 = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=next(_SCENE_DAYS))
        self.tag = uuid.uuid4().hex[:8]
        self.names: dict[str, str] = {}  # eventID -> name

    def sgtin(self, serial: str) -> str:
        return f"urn:epc:id:sgtin:{self.prefix}.{self.item_ref}.{self.tag}{serial}"

    def lgtin(self, lot: str) -> str:
        return f"urn:epc:class:lgtin:{self.prefix}.{self.item_ref}.{self.tag}{lot}"

    @property
    def gtin(self) -> str:
        found = gtin(self.prefix, self.item_ref)
        assert found is not None
        return found

    def time(self, minutes: int) -> str:
        return (self.t0 + timedelta(minutes=minutes)).isoformat()

    def event(self, name: str, minutes: int, **fields: Any) -> dict[str, Any]:
        event_id = f"urn:uuid:{uuid.uuid4()}"
        self.names[event_id] = name
        return {
            "eventID": event_id,
            "eventTime": self.time(minutes),
            "eventTimeZoneOffset": "+00:00",
            **fields,
        }

    def document(self) -> dict[str, Any]:
        rp1, rp2 = f"urn:epc:id:sgln:4012345.00001.{self.tag}", "urn:epc:id:sgln:4012345.00002.0"
        return epcis_document(
            self.event("A", 1, type="ObjectEvent", action="OBSERVE",
                       bizStep="https://ref.gs1.org/cbv/BizStep-receiving",
                       disposition="in_progress", readPoint={"id": rp1},
                       bizLocation={"id": f"urn:epc:id:sgln:4012345.00001.bl{self.tag}"},
                       epcList=[self.sgtin("1")],
                       quantityList=[{"epcClass": self.lgtin("L1"), "quantity": 5, "uom": "KGM"}]),
            self.event("B", 2, type="ObjectEvent", action="OBSERVE", bizStep="shipping",
                       disposition="in_transit", readPoint={"id": rp2},
                       epcList=[self.sgtin("2")]),
            self.event("C", 3, type="AggregationEvent", action="ADD", bizStep="packing",
                       parentID=f"urn:epc:id:sscc:4012345.0{self.tag[:1].replace('a', '1')}"
                       f"{random.randrange(10**8):08d}",
                       childEPCs=[self.sgtin("1")], readPoint={"id": rp2}),
            self.event("D", 4, type="TransformationEvent", bizStep="commissioning",
                       transformationID=f"urn:x-partner:batch:{self.tag}",
                       inputEPCList=[self.sgtin("1")],
                       inputQuantityList=[{"epcClass": self.lgtin("L1"), "quantity": 2}],
                       outputEPCList=[self.sgtin("3")],
                       outputQuantityList=[{"epcClass": self.lgtin("L2"), "quantity": 1}]),
            self.event("E", 5, type="AssociationEvent", action="ADD", bizStep="assembling",
                       parentID=f"urn:epc:id:grai:4012345.55555.{self.tag}",
                       childEPCs=[f"urn:epc:id:giai:4000001.{self.tag}"]),
            self.event("F", 6, type="TransactionEvent", action="ADD",
                       bizTransactionList=[{"type": "po", "bizTransaction":
                                            f"urn:epc:id:gdti:0614141.00001.{self.tag}"}],
                       epcList=[self.sgtin("2")]),
        )  # fmt: skip


@pytest.fixture
async def scene(collector: RunningCollector) -> Scene:
    s = Scene()
    async with collector.client() as http:
        answer = await capture(http, s.document())
        assert answer.status_code == 202, answer.text
    return s


def window(s: Scene) -> dict[str, str]:
    return {"GE_eventTime": s.time(0), "LT_eventTime": s.time(10)}


# (parameters beyond the scene's time window, names of the events expected)
CASES: list[tuple[str, Any, str]] = [
    ("everything", lambda s: {}, "ABCDEF"),
    ("eventType", lambda s: {"eventType": "ObjectEvent"}, "AB"),
    ("eventType, two", lambda s: {"eventType": "ObjectEvent|AggregationEvent"}, "ABC"),
    ("bare bizStep matches a URI", lambda s: {"EQ_bizStep": "receiving"}, "A"),
    ("URN bizStep", lambda s: {"EQ_bizStep": "urn:epcglobal:cbv:bizstep:receiving"}, "A"),
    ("URI bizStep", lambda s: {"EQ_bizStep": "https://ref.gs1.org/cbv/BizStep-shipping"}, "B"),
    ("disposition", lambda s: {"EQ_disposition": "in_transit"}, "B"),
    (
        "disposition URI",
        lambda s: {"EQ_disposition": "https://ref.gs1.org/cbv/Disp-in_progress"},
        "A",
    ),
    ("readPoint", lambda s: {"EQ_readPoint": f"urn:epc:id:sgln:4012345.00001.{s.tag}"}, "A"),
    ("bizLocation", lambda s: {"EQ_bizLocation": f"urn:epc:id:sgln:4012345.00001.bl{s.tag}"}, "A"),
    ("MATCH_epc: epcList and childEPCs", lambda s: {"MATCH_epc": s.sgtin("1")}, "AC"),
    (
        "MATCH_epc as a Digital Link",
        lambda s: {"MATCH_epc": f"https://id.gs1.org/01/{s.gtin}/21/{s.tag}1"},
        "AC",
    ),
    (
        "MATCH_epc pattern",
        lambda s: {"MATCH_epc": f"urn:epc:idpat:sgtin:{s.prefix}.{s.item_ref}.*"},
        "ABCF",
    ),
    ("MATCH_anyEPC", lambda s: {"MATCH_anyEPC": s.sgtin("1")}, "ACD"),
    (
        "MATCH_anyEPC parent",
        lambda s: {"MATCH_anyEPC": f"urn:epc:id:grai:4012345.55555.{s.tag}"},
        "E",
    ),
    ("MATCH_epcClass", lambda s: {"MATCH_epcClass": s.lgtin("L1")}, "A"),
    (
        "MATCH_epcClass as a Digital Link",
        lambda s: {"MATCH_epcClass": f"https://id.gs1.org/01/{s.gtin}/10/{s.tag}L1"},
        "A",
    ),
    ("MATCH_inputEPC", lambda s: {"MATCH_inputEPC": s.sgtin("1")}, "D"),
    ("MATCH_outputEPC", lambda s: {"MATCH_outputEPC": s.sgtin("3")}, "D"),
    ("MATCH_outputEPC, an input", lambda s: {"MATCH_outputEPC": s.sgtin("1")}, ""),
    ("MATCH_outputEPCClass", lambda s: {"MATCH_outputEPCClass": s.lgtin("L2")}, "D"),
    ("EQ_transformationID", lambda s: {"EQ_transformationID": f"urn:x-partner:batch:{s.tag}"}, "D"),
    ("narrower time", lambda s: {"GE_eventTime": s.time(2), "LT_eventTime": s.time(4)}, "BC"),
    (
        "time with an offset",
        lambda s: {"GE_eventTime": (s.t0 + timedelta(minutes=2)).astimezone().isoformat()},
        "BCDEF",
    ),
    ("recordTime in the future", lambda s: {"GE_recordTime": "2999-01-01T00:00:00Z"}, ""),
    ("recordTime in the past", lambda s: {"GE_recordTime": "2000-01-01T00:00:00Z"}, "ABCDEF"),
]


@pytest.mark.parametrize(("case", "params", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_query_parameters(
    collector: RunningCollector, scene: Scene, case: str, params: Any, expected: str
) -> None:
    async with collector.client() as http:
        found = await events(http, **(window(scene) | params(scene)))
    assert "".join(sorted(scene.names[e["eventID"]] for e in found)) == expected


async def test_event_id(collector: RunningCollector, scene: Scene) -> None:
    wanted = next(i for i, n in scene.names.items() if n == "E")
    async with collector.client() as http:
        found = await events(http, EQ_eventID=wanted)
    assert [e["eventID"] for e in found] == [wanted]


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_order_and_pages_follow_the_link_header(
    collector: RunningCollector, scene: Scene, direction: str
) -> None:
    params: dict[str, Any] = {
        **window(scene),
        "orderBy": "eventTime",
        "orderDirection": direction,
        "perPage": 4,
    }
    names, pages = [], 0
    async with collector.client() as http:
        url: str | None = "/epcis/events"
        while url:
            answer = await http.get(url, params=params if pages == 0 else None)
            assert answer.status_code == 200, answer.text
            pages += 1
            page = answer.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
            names += [scene.names[e["eventID"]] for e in page]
            url = _next(answer)
    assert pages == 2
    assert "".join(names) == ("ABCDEF" if direction == "ASC" else "FEDCBA")


async def test_event_count_limit_spans_pages(collector: RunningCollector, scene: Scene) -> None:
    params = {**window(scene), "orderBy": "eventTime", "orderDirection": "ASC",
              "eventCountLimit": "3", "perPage": "2"}  # fmt: skip
    async with collector.client() as http:
        first = await http.get("/epcis/events", params=params)
        url = _next(first)
        assert url is not None
        second = await http.get(url)
    assert _next(second) is None
    got = [first, second]
    names = [scene.names[e["eventID"]] for a in got for e in _events(a)]
    assert names == ["A", "B", "C"]


async def test_max_event_count_refuses_a_larger_answer(
    collector: RunningCollector, scene: Scene
) -> None:
    async with collector.client() as http:
        answer = await http.get("/epcis/events", params={**window(scene), "maxEventCount": 2})
        fits = await http.get("/epcis/events", params={**window(scene), "maxEventCount": 6})
    assert answer.status_code == 413
    assert answer.json()["type"] == "epcisException:QueryTooLargeException"
    assert len(_events(fits)) == 6


REFUSED: list[tuple[dict[str, str], str]] = [
    ({"EQ_bizstep": "receiving"}, "EQ_bizstep"),
    ({"MATCH_everything": "x"}, "MATCH_everything"),
    ({"orderDirection": "UP"}, "orderDirection"),
    ({"orderBy": "bizStep"}, "orderBy"),
    ({"perPage": "0"}, "perPage"),
    ({"perPage": "100000"}, "perPage"),
    ({"GE_eventTime": "last tuesday"}, "GE_eventTime"),
    ({"GE_eventTime": "2026-01-01T00:00:00"}, "GE_eventTime"),
    ({"nextPageToken": "garbage"}, "nextPageToken"),
    ({"eventCountLimit": "3"}, "orderBy"),
    ({"eventCountLimit": "3", "maxEventCount": "3", "orderBy": "eventTime"}, "maxEventCount"),
]


@pytest.mark.parametrize(("params", "named"), REFUSED, ids=[r[1] + str(r[0]) for r in REFUSED])
async def test_bad_parameters_are_refused_naming_them(
    collector: RunningCollector, params: dict[str, str], named: str
) -> None:
    async with collector.client() as http:
        answer = await http.get("/epcis/events", params=params)
    assert answer.status_code == 400
    assert answer.json()["type"] == "epcisException:QueryParameterException"
    assert named in answer.json()["detail"]


async def test_a_page_token_is_not_valid_for_other_filters(
    collector: RunningCollector, scene: Scene
) -> None:
    async with collector.client() as http:
        first = await http.get("/epcis/events", params={**window(scene), "perPage": 1})
        url = _next(first)
        assert url is not None
        token = dict(parse_qsl(urlsplit(url).query))["nextPageToken"]
        other = await http.get(
            "/epcis/events", params={"eventType": "ObjectEvent", "nextPageToken": token}
        )
    assert other.status_code == 400
    assert "nextPageToken" in other.json()["detail"]


async def test_query_needs_a_reader_key(collector: RunningCollector) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as http:
        assert (await http.get("/epcis/events")).status_code == 401


# -- our own edges' events ------------------------------------------------------------------


async def post_readings(services: Services, edge: str, batch: str, values: list[float]) -> None:
    records = [
        {"kind": "reading", "seq": i, "time": (T0 + timedelta(seconds=i)).isoformat(),
         "line": "line-1", "batch": batch, "device": "reactor-1", "tag": "temperature",
         "value": v, "unit": "Cel"}
        for i, v in enumerate(values)
    ]  # fmt: skip
    payload = json.dumps(
        {"edge_id": edge, "stream": "readings", "epoch": "e", "records": records}
    ).encode()
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        outcome = await ingest(c, topics.data(edge, "readings"), payload)
    assert outcome.ack is not None, outcome.reason


async def test_own_events_are_queryable_as_epcis(
    collector: RunningCollector, services: Services
) -> None:
    p = Plant(services)
    flour, dough = p.lot("FLOUR"), p.lot("DOUGH")
    batch = f"B1-{p.tag}"
    await post_readings(services, p.edge, batch, [20.0, 22.0, 24.0])
    await p.post(
        p.receipt([lot_item(FLOUR_GTIN, flour, 1000, "KGM")], f"PO-{p.tag}"),
        p.batch(batch, [lot_item(FLOUR_GTIN, flour, 500, "KGM")],
                [lot_item(FLOUR_GTIN, dough, 480, "KGM")]),
    )  # fmt: skip
    flour_class = f"https://id.gs1.org/01/{FLOUR_GTIN}/10/{flour}"
    flour_lgtin = f"urn:epc:class:lgtin:9506000.013435.{flour}"
    async with collector.client() as http:
        answer = await http.get(
            "/epcis/events", params={"MATCH_anyEPCClass": flour_lgtin, "orderBy": "eventTime",
                                     "orderDirection": "ASC"}
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        doc = answer.json()
        by_bare_read_point = await events(
            http, EQ_readPoint="dock-1", MATCH_epcClass=flour_class, EQ_bizStep="receiving"
        )
    assert [e.message for e in VALIDATOR.iter_errors(doc)] == []
    received, made = _events(answer)
    assert received["type"] == "ObjectEvent"
    assert received["eventID"] == f"urn:x-trace:event:{p.edge}-0"
    assert received["bizStep"] == "receiving"
    assert received["readPoint"] == {"id": "urn:x-trace:loc:dock-1"}
    assert received["quantityList"] == [{"epcClass": flour_class, "quantity": 1000, "uom": "KGM"}]
    assert received["bizTransactionList"] == [
        {"type": "po", "bizTransaction": f"urn:x-trace:bt:po:PO-{p.tag}"}
    ]
    assert [e["eventID"] for e in by_bare_read_point] == [received["eventID"]]
    assert made["type"] == "TransformationEvent"
    assert made["transformationID"] == f"urn:x-trace:batch:{batch}"
    assert made["inputQuantityList"][0]["epcClass"] == flour_class
    assert made["trace:batch"] == batch
    [element] = made["sensorElementList"]
    assert element["sensorMetadata"]["deviceID"] == "urn:x-trace:device:reactor-1"
    [report] = element["sensorReport"]
    assert report["type"] == "Temperature"
    assert report["uom"] == "CEL"
    assert (report["minValue"], report["maxValue"], report["meanValue"]) == (20.0, 24.0, 22.0)
    assert report["trace:count"] == 3


def _events(answer: httpx.Response) -> list[dict[str, Any]]:
    return list(answer.json()["epcisBody"]["queryResults"]["resultsBody"]["eventList"])


def _next(answer: httpx.Response) -> str | None:
    link = answer.headers.get("Link")
    if not link:
        return None
    assert link.endswith('>; rel="next"'), link
    return link[1 : link.index(">")]


async def test_one_event_by_its_id(collector: RunningCollector, scene: Scene) -> None:
    wanted = next(i for i, n in scene.names.items() if n == "D")
    async with collector.client() as http:
        answer = await http.get(f"/epcis/events/{quote(wanted, safe='')}")
        missing = await http.get(f"/epcis/events/{quote('urn:uuid:nothing', safe='')}")
    assert answer.status_code == 200, answer.text
    event = answer.json()
    assert event["eventID"] == wanted
    assert event["type"] == "TransformationEvent"
    assert event["@context"][0].startswith("https://ref.gs1.org/standards/epcis/")
    assert missing.status_code == 404
    assert missing.json()["type"] == "epcisException:NoSuchResourceException"


async def test_our_own_urn_names_our_own_event_even_beside_a_captured_namesake(
    collector: RunningCollector, services: Services
) -> None:
    """A captured event stored as urn:x-trace:event:{id} before capture refused the prefix:
    GET /epcis/events/urn:x-trace:event:{id} still answers with our event {id}, not a 500."""
    p = Plant(services)
    await p.post(p.receipt([lot_item(FLOUR_GTIN, p.lot("FLOUR"), 10, "KGM")], f"PO-{p.tag}"))
    ours = f"urn:x-trace:event:{p.edge}-0"
    namesake = {
        "type": "ObjectEvent", "eventTime": "2026-11-20T08:00:00Z",
        "eventTimeZoneOffset": "+00:00", "action": "OBSERVE", "bizStep": "shipping",
        "epcList": [f"urn:epc:id:sgtin:4012345.011111.{p.tag}"],
    }  # fmt: skip
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        await c.execute(
            "insert into trace_events (event_id, event_type, event_time, action, biz_step,"
            " body, body_format) values (%s, 'ObjectEvent', now(), 'OBSERVE', 'shipping', %s,"
            " 'epcis')",
            (ours, json.dumps(namesake)),
        )
    async with collector.client(Role.reader) as http:
        answer = await http.get(f"/epcis/events/{quote(ours, safe='')}")
        both = await events(http, EQ_eventID=ours)
    assert answer.status_code == 200, answer.text
    assert answer.json()["eventID"] == ours
    assert answer.json()["bizStep"] == "receiving"
    assert len(both) == 2, "a query may answer both; the one-event lookup names ours"


async def test_an_unidentified_read_is_kept_as_an_extension(
    collector: RunningCollector, services: Services
) -> None:
    p = Plant(services)
    raw = f"E2801160600002{p.tag}"
    receipt = p.receipt([{"raw": raw, "unknown_reason": "not an EPC"}], f"PO-{p.tag}")
    await p.post({**receipt, "flags": ["unknown_tag"]})
    async with collector.client() as http:
        answer = await http.get(
            "/epcis/events", params={"EQ_eventID": f"urn:x-trace:event:{p.edge}-0"}
        )
    assert [e.message for e in VALIDATOR.iter_errors(answer.json())] == []
    [event] = _events(answer)
    assert event["epcList"] == []
    assert event["trace:unidentifiedEpcList"] == [raw]
    assert event["trace:flags"] == ["unknown_tag"]


async def test_a_bizstep_cbv_lacks_is_written_as_our_uri(
    collector: RunningCollector, services: Services
) -> None:
    p = Plant(services)
    flour = lot_item(FLOUR_GTIN, p.lot("FLOUR"), 5, "KGM")
    consumed = {**p.receipt([flour], f"PO-{p.tag}"), "biz_step": "consuming", "line": "line-1"}
    await p.post({**consumed, "flags": ["no_active_batch"]})
    async with collector.client() as http:
        answer = await http.get(
            "/epcis/events",
            params={
                "EQ_bizStep": "urn:x-trace:bizstep:consuming",
                "MATCH_epcClass": flour["epc_class"],
            },
        )
        bare = await events(http, EQ_bizStep="consuming", MATCH_epcClass=flour["epc_class"])
    assert [e.message for e in VALIDATOR.iter_errors(answer.json())] == []
    [event] = _events(answer)
    assert event["bizStep"] == "urn:x-trace:bizstep:consuming"
    assert [e["eventID"] for e in bare] == [event["eventID"]]


async def test_units_are_written_as_epcis_writes_them(
    collector: RunningCollector, services: Services
) -> None:
    p = Plant(services)
    in_kg = lot_item(FLOUR_GTIN, p.lot("KG"), 5, "kg")
    in_bags = lot_item(FLOUR_GTIN, p.lot("BAGS"), 3, "bags")
    await p.post(p.receipt([in_kg, in_bags], f"PO-{p.tag}"))
    async with collector.client() as http:
        answer = await http.get("/epcis/events", params={"MATCH_epcClass": in_kg["epc_class"]})
    assert [e.message for e in VALIDATOR.iter_errors(answer.json())] == []
    [event] = _events(answer)
    assert event["quantityList"] == [
        {"epcClass": in_kg["epc_class"], "quantity": 5, "uom": "KGM"},
        {"epcClass": in_bags["epc_class"], "quantity": 3},
    ]
    assert event["trace:unitsQuantityList"] == {in_bags["epc_class"]: "bags"}


async def test_one_prefix_two_namespaces_on_one_page(collector: RunningCollector) -> None:
    """Two partners both write `ex:` for namespaces of their own: the answer renames one,
    so every extension field keeps its meaning."""
    tag = uuid.uuid4().hex[:8]
    epc = f"urn:epc:id:sgtin:4012345.011111.NS{tag}"
    sent = []
    async with collector.client() as http:
        for n, iri in enumerate(["https://one.example.com/", "https://two.example.com/"]):
            event = {
                "type": "ObjectEvent", "eventTime": f"2026-11-20T0{n}:00:00Z",
                "eventTimeZoneOffset": "+00:00", "action": "OBSERVE", "epcList": [epc],
                "ex:field": f"value {n}", "ex:nested": {"ex:inner": n},
            }  # fmt: skip
            doc = epcis_document(event, prefixes={"ex": iri})
            assert (await capture(http, doc)).status_code == 202
            sent.append(equivalent_form(event, doc["@context"], drop_event_id=True))
        answer = await http.get(
            "/epcis/events",
            params={"MATCH_epc": epc, "orderBy": "eventTime", "orderDirection": "ASC"},
        )
    result = answer.json()
    back = [equivalent_form(e, result["@context"], True) for e in _events(answer)]
    assert back == sent
    assert sorted(result["@context"][1]) == ["ex", "ex2"]
