"""EPCIS capture parsing against hostile documents: whatever a partner posts, as JSON-LD or
as XML, `document.parse_json` and `xml_binding.parse` return a Document or raise
InvalidDocument (the route's 400/413 problem), never anything else (a 500). XML with a DTD,
entities (billion laughs, external files), unknown encodings, deep nesting or huge
attributes is refused; nothing outside the document is ever read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_collector.epcis import document, xml_binding
from cloud_collector.epcis.document import CaptureLimits, Document, InvalidDocument
from tests.cloud_collector.epcis.documents import epcis_document, object_event
from tests.hostile_input import HOSTILE_JSON, Raw, damaged, deep, dumps, one_value_replaced

LIMITS = CaptureLimits()
VALID = epcis_document(
    object_event(
        "urn:epc:id:sgtin:4012345.011111.1",
        quantityList=[{"epcClass": "urn:epc:class:lgtin:4012345.011111.L1", "quantity": 2.5}],
        bizTransactionList=[{"type": "po", "bizTransaction": "urn:epcglobal:cbv:bt:4012345:1"}],
        sensorElementList=[
            {"sensorMetadata": {"time": "2026-11-20T08:00:00Z"},
             "sensorReport": [{"type": "Temperature", "value": 4.5, "uom": "CEL"}]}
        ],
    ),
    prefixes={"ex": "https://example.com/epcis/"},
)  # fmt: skip
XML_CASES = sorted((Path(__file__).parent / "cases" / "xml").glob("*/capture.xml"))
XML_TEXTS = [path.read_bytes() for path in XML_CASES]


def refusal(parse: Any, body: bytes) -> InvalidDocument | None:
    try:
        parsed = parse(body, LIMITS)
    except InvalidDocument as err:
        return err
    assert isinstance(parsed, Document)
    json.dumps(parsed.events, allow_nan=False)  # storable as jsonb: no NaN, no infinity
    return None


def refused_with_reason(parse: Any, body: bytes) -> None:
    err = refusal(parse, body)
    assert err is None or (err.path.startswith("$") and err.reason and err.status in (400, 413))


def test_the_valid_documents_are_valid() -> None:
    assert refusal(document.parse_json, dumps(VALID)) is None
    for text in XML_TEXTS:
        assert refusal(xml_binding.parse, text) is None


# -- JSON-LD --------------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_json_any_bytes(body: bytes) -> None:
    refused_with_reason(document.parse_json, body)


@given(HOSTILE_JSON)
def test_json_hostile_values(value: Any) -> None:
    refused_with_reason(document.parse_json, dumps(value))


@given(one_value_replaced(VALID))
def test_json_a_valid_document_with_one_value_replaced(doc: Any) -> None:
    refused_with_reason(document.parse_json, dumps(doc))


@given(damaged(dumps(VALID)))
def test_json_a_valid_document_damaged(body: bytes) -> None:
    refused_with_reason(document.parse_json, body)


@pytest.mark.parametrize(
    "body",
    [
        dumps(Raw("1" * 5000)),
        dumps({**VALID, "schemaVersion": Raw("9" * 5000)}),
        dumps(deep(100_000)),
        dumps({**VALID, "epcisBody": {"eventList": [deep(40)]}}),
        dumps(
            epcis_document(
                object_event(
                    "urn:epc:id:sgtin:4012345.011111.1",
                    quantityList=[{"epcClass": "urn:epc:class:lgtin:4012345.011111.L1",
                                   "quantity": Raw("1e400")}],
                )
            )
        ),
        dumps(epcis_document(object_event("urn:epc:id:sgtin:4012345.011111.1", x=Raw("NaN")))),
        dumps(epcis_document(object_event("urn:epc:id:sgtin:4012345.011111.1",
                                          eventTime="2026-11-20T08:00:00.000+25:00"))),
    ],
    ids=["huge-int", "huge-int-inside", "deep", "deep-event", "infinite-quantity", "nan",
         "bad-offset"],
)  # fmt: skip
def test_json_hostile_documents_are_refused(body: bytes) -> None:
    assert refusal(document.parse_json, body) is not None


# -- XML --------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2">&lol3;</epcis:EPCISDocument>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2">&secret;</epcis:EPCISDocument>"""
PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY % ext SYSTEM "http://127.0.0.1:9/x.dtd"> %ext;]><a/>"""


def xml_document(inner: bytes, attributes: bytes = b"") -> bytes:
    return (
        b'<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" ' + attributes + b">"
        b"<EPCISBody><EventList>" + inner + b"</EventList></EPCISBody></epcis:EPCISDocument>"
    )


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        XXE,
        PARAMETER_ENTITY,
        b'<?xml version="1.0" encoding="x-no-such-encoding"?><a/>',
        b'<?xml version="1.0" encoding="utf-32"?><a/>',
        b"<a>" * 10_000 + b"</a>" * 10_000,
        xml_document(b"<ObjectEvent>" * 40 + b"</ObjectEvent>" * 40),
        xml_document(b"<ObjectEvent/>", b'creationDate="' + b"x" * 1_000_000 + b'"'),
        xml_document(b"<ObjectEvent><quantityList><quantityElement><quantity>"
                     + b"9" * 5000 + b"</quantity></quantityElement></quantityList></ObjectEvent>"),
        xml_document(b"<ObjectEvent><eventTime>x</eventTime><eventTime>y</eventTime>"
                     b"</ObjectEvent>"),
        b"",
        b"\xef\xbb\xbf",
        b"<a>&#0;</a>",
    ],
    ids=["billion-laughs", "xxe", "parameter-entity", "unknown-encoding", "wrong-encoding",
         "deep", "deep-event", "huge-attribute", "huge-number", "twice", "empty", "bom", "nul"],
)  # fmt: skip
def test_xml_hostile_documents_are_refused(body: bytes) -> None:
    err = refusal(xml_binding.parse, body)
    assert err is not None
    assert "root:" not in err.reason  # nothing of /etc/passwd comes back


@given(st.binary(max_size=2000))
def test_xml_any_bytes(body: bytes) -> None:
    refused_with_reason(xml_binding.parse, body)


@given(st.sampled_from(XML_TEXTS).flatmap(damaged))
def test_xml_a_valid_document_damaged(body: bytes) -> None:
    refused_with_reason(xml_binding.parse, body)


XML_NAMES = st.sampled_from(
    ["ObjectEvent", "eventTime", "quantity", "epcList", "epc", "extension", "bizStep",
     "sensorElement", "sensorReport", "ex:x", "readPoint", "id", "errorDeclaration"]
)  # fmt: skip
XML_TEXT = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=30),
    st.sampled_from(["1e400", "NaN", "-0", "9" * 400, "2026-13-45T00:00:00Z", "true"]),
)


def xml_tree(depth: int = 3) -> st.SearchStrategy[str]:
    leaf = st.builds(lambda name, text: f"<{name}>{_escape(text)}</{name}>", XML_NAMES, XML_TEXT)
    if depth == 0:
        return leaf
    return st.one_of(
        leaf,
        st.builds(
            lambda name, children, attr: (
                f'<{name} type="{_escape(attr)}">{"".join(children)}</{name}>'
            ),
            XML_NAMES,
            st.lists(xml_tree(depth - 1), max_size=4),
            XML_TEXT,
        ),
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


@given(st.lists(xml_tree(), max_size=4))
def test_xml_documents_of_any_shape(events: list[str]) -> None:
    body = xml_document("".join(events).encode(), b'xmlns:ex="https://example.com/x"')
    refused_with_reason(xml_binding.parse, body)
