"""Trading parties of captured events: a receipt's sourceList names its supplier and a
shipment's destinationList its customer, in the trace, the recall and its CSV; the event
query gives the lists back as captured; a malformed party refuses the document, naming the
field."""

from __future__ import annotations

import csv
import io
import random
import uuid
from typing import Any

import pytest

from cloud_collector.auth import Role
from cloud_collector.epcis import parties
from cloud_collector.epcis.document import InvalidDocument
from protocols.gs1 import gtin_of_epc, with_check_digit
from tests.cloud_collector.epcis.documents import capture, epcis_document, events
from tests.conftest import RunningCollector

GTIN = gtin_of_epc("4012345", "055555")
assert GTIN is not None


def _company() -> str:
    """A GS1 company prefix of seven digits no other test names."""
    return f"95{random.randrange(10**5):05d}"


def _event(step: str, lot: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "ObjectEvent",
        "eventTime": "2026-11-20T08:00:00Z" if step == "receiving" else "2026-11-20T16:00:00Z",
        "eventTimeZoneOffset": "+01:00",
        "action": "OBSERVE",
        "bizStep": step,
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.0"},
        "quantityList": [
            {"epcClass": f"urn:epc:class:lgtin:4012345.055555.{lot}", "quantity": 40, "uom": "KGM"}
        ],
        **fields,
    }


def _transformation(raw: str, made: str) -> dict[str, Any]:
    return {
        "type": "TransformationEvent",
        "eventTime": "2026-11-20T10:00:00Z",
        "eventTimeZoneOffset": "+01:00",
        "transformationID": f"urn:uuid:{uuid.uuid4()}",
        "bizStep": "commissioning",
        "inputQuantityList": [
            {"epcClass": f"urn:epc:class:lgtin:4012345.055555.{raw}", "quantity": 40, "uom": "KGM"}
        ],
        "outputQuantityList": [
            {"epcClass": f"urn:epc:class:lgtin:4012345.055555.{made}", "quantity": 40, "uom": "KGM"}
        ],
    }


async def test_receipts_get_their_supplier_and_shipments_their_customer(
    collector: RunningCollector,
) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    raw, made = f"RAW{tag}", f"OUT{tag}"
    mill, shop = _company(), _company()
    mill_gln, shop_gln = with_check_digit(mill + "00000"), with_check_digit(shop + "00000")
    receiving = _event(
        "receiving",
        raw,
        sourceList=[
            {"type": "location", "source": f"urn:epc:id:sgln:{mill}.00000.0"},
            {"type": "owning_party", "source": f"urn:epc:id:pgln:{mill}.00000"},
        ],
        destinationList=[{"type": "owning_party", "destination": "urn:epc:id:pgln:4012345.00000"}],
    )
    sent_to = [
        {"type": "location", "destination": f"https://id.gs1.org/414/{shop_gln}/254/7"},
        {"type": "possessing_party", "destination": "urn:epc:id:pgln:4012345.00099"},
        {"type": "https://ref.gs1.org/cbv/SDT-owning_party",
         "destination": f"https://id.gs1.org/417/{shop_gln}"},
    ]  # fmt: skip
    shipping = _event("shipping", made, destinationList=sent_to)
    document = epcis_document(receiving, _transformation(raw, made), shipping)
    # The mill is described by master data (its site's SGLN); the shop by nobody.
    document["epcisHeader"] = {
        "epcisMasterData": {
            "vocabularyList": [
                {
                    "type": "urn:epcglobal:epcis:vtype:BusinessLocation",
                    "vocabularyElementList": [
                        {
                            "id": f"urn:epc:id:sgln:{mill}.00000.0",
                            "attributes": [
                                {"id": "urn:epcglobal:cbv:mda#name", "attribute": f"Mill {tag}"}
                            ],
                        }
                    ],
                }
            ]
        }
    }
    async with collector.client() as http:
        answer = await capture(http, document)
        assert answer.status_code == 202, answer.text
        made_class = f"urn:epc:class:lgtin:4012345.055555.{made}"
        shipped = await events(http, EQ_bizStep="shipping", MATCH_epcClass=made_class)
    assert [e["destinationList"] for e in shipped] == [sent_to], "given back as captured"
    async with collector.client(Role.reader) as http:
        backward = (await http.get(f"/api/v1/lots/01/{GTIN}/10/{made}/trace/backward")).json()
        forward = (await http.get(f"/api/v1/lots/01/{GTIN}/10/{raw}/trace/forward")).json()
        recall = (await http.get(f"/api/v1/lots/01/{GTIN}/10/{raw}/recall")).json()
        recall_csv = await http.get(f"/api/v1/lots/01/{GTIN}/10/{raw}/recall?format=csv")
    # The owning party, named through the GLN its SGLN shares with the master data's place.
    assert [(r["supplier"], r["supplier_id"]) for r in backward["receipts"]] == [
        (f"Mill {tag}", f"(417){mill_gln}")
    ]
    # The owning party (a Digital Link, the type as a CBV URI), before the possessing party
    # and the location; no name known: shown as its GS1 key.
    customer = f"(417){shop_gln}"
    assert [(s["customer_id"], s["customer"]) for s in forward["shipments"]] == [
        (customer, customer)
    ]
    assert [c["customer"] for c in forward["customers"]] == [customer]
    assert [(x["status"], x["customer"]) for x in recall["lines"]] == [("shipped", customer)]
    assert [c["customer_id"] for c in recall["customers"]] == [customer]
    assert recall_csv.status_code == 200, recall_csv.text
    rows = list(csv.DictReader(io.StringIO(recall_csv.text)))
    assert [r["customer"] for r in rows if r["status"] == "shipped"] == [customer]


async def test_the_erp_names_a_customer_before_the_captured_party(
    collector: RunningCollector,
) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    shop_gln = with_check_digit(_company() + "00000")
    shipping = _event(
        "shipping",
        f"OUT{tag}",
        destinationList=[{"type": "owning_party", "destination": f"https://id.gs1.org/417/{shop_gln}"}],
        bizTransactionList=[{"type": "desadv", "bizTransaction": f"SH-{tag}"}],
    )  # fmt: skip
    async with collector.client() as http:
        answer = await capture(http, epcis_document(shipping))
        assert answer.status_code == 202, answer.text
        for path, body in (
            ("customers", [{"customer_id": f"C-{tag}", "name": f"Shop {tag}"}]),
            ("shipments", [{"shipment": f"SH-{tag}", "customer_id": f"C-{tag}"}]),
        ):
            answer = await http.put(f"/api/v1/erp/{path}", json=body)
            assert answer.status_code < 300, answer.text
    async with collector.client(Role.reader) as http:
        recall = (await http.get(f"/api/v1/lots/01/{GTIN}/10/OUT{tag}/recall")).json()
    shipped = [x for x in recall["lines"] if x["status"] == "shipped"]
    assert [(x["customer_id"], x["customer"]) for x in shipped] == [(f"C-{tag}", f"Shop {tag}")]


@pytest.mark.parametrize(
    ("field", "entry", "said"),
    [
        ("sourceList", {"type": "owning_party",
                        "source": "urn:epc:id:sgtin:4012345.011111.1"}, "not a PGLN"),
        ("destinationList", {"type": "location",
                             "destination": "urn:epc:id:pgln:4012345.00000"}, "not a SGLN"),
        ("sourceList", {"type": "possessing_party",
                        "source": "https://example.com/parties/7"}, "not a PGLN"),
        ("destinationList", {"type": "https://ref.gs1.org/cbv/SDT-owning_party",
                             "destination": "urn:epc:id:pgln:4012345.0000"}, "not a PGLN"),
    ],
)  # fmt: skip
async def test_a_malformed_party_refuses_the_document_naming_the_field(
    collector: RunningCollector, field: str, entry: dict[str, str], said: str
) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    event = _event("receiving", f"BAD{tag}", **{field: [entry]})
    fine = _event("receiving", f"OK{tag}")
    async with collector.client() as http:
        answer = await capture(http, epcis_document(fine, event))
        assert answer.status_code == 400, answer.text
        problem = answer.json()
        stored = await events(http, MATCH_epcClass=f"urn:epc:class:lgtin:4012345.055555.OK{tag}")
    side = "source" if field == "sourceList" else "destination"
    assert problem["type"] == "epcisException:ValidationException"
    assert problem["path"] == f"$.epcisBody.eventList[1].{field}[0].{side}"
    assert said in problem["reason"]
    assert stored == [], "a refused document is stored not at all"


def test_a_private_type_is_kept_as_sent_without_a_key() -> None:
    event = {"sourceList": [{"type": "https://example.com/sdt/broker", "source": "urn:x:b:1"}]}
    assert parties.of_event(event, "$") == [
        parties.Party("source", 0, "https://example.com/sdt/broker", "urn:x:b:1", None, None, None)
    ]


def test_an_sgln_keeps_its_extension_and_the_whole_gln_none() -> None:
    event = {
        "destinationList": [
            {"type": "urn:epcglobal:cbv:sdt:location",
             "destination": "urn:epc:id:sgln:0614141.00777.0"},
            {"type": "location", "destination": "https://id.gs1.org/414/0614141007776/254/B1"},
        ]
    }  # fmt: skip
    found = parties.of_event(event, "$")
    assert [(p.type, p.gln, p.extension, p.key) for p in found] == [
        ("location", "0614141007776", None, "(414)0614141007776"),
        ("location", "0614141007776", "B1", "(414)0614141007776(254)B1"),
    ]


def test_a_list_too_long_is_refused() -> None:
    entry = {"type": "location", "source": "urn:epc:id:sgln:0614141.00777.0"}
    with pytest.raises(InvalidDocument) as refused:
        parties.of_event({"sourceList": [entry] * (parties.MAX_PER_LIST + 1)}, "$.e")
    assert refused.value.path == "$.e.sourceList"


def _xml_receipt(lot: str, source: str) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:1" schemaVersion="1.2"
    creationDate="2026-11-25T10:00:00Z">
  <EPCISBody><EventList><ObjectEvent>
    <eventTime>2026-11-20T08:00:00Z</eventTime>
    <eventTimeZoneOffset>+00:00</eventTimeZoneOffset>
    <epcList/>
    <action>OBSERVE</action>
    <bizStep>urn:epcglobal:cbv:bizstep:receiving</bizStep>
    <readPoint><id>urn:epc:id:sgln:4012345.00001.0</id></readPoint>
    <extension>
      <quantityList><quantityElement>
        <epcClass>urn:epc:class:lgtin:4012345.055555.{lot}</epcClass>
        <quantity>5</quantity><uom>KGM</uom>
      </quantityElement></quantityList>
      <sourceList>
        <source type="urn:epcglobal:cbv:sdt:possessing_party">{source}</source>
      </sourceList>
    </extension>
  </ObjectEvent></EventList></EPCISBody>
</epcis:EPCISDocument>"""


async def test_a_partners_xml_document_names_its_supplier_or_is_refused(
    collector: RunningCollector,
) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    mill = _company()
    xml = {"Content-Type": "application/xml"}
    async with collector.client() as http:
        good = await capture(http, _xml_receipt(f"X{tag}", f"urn:epc:id:sgln:{mill}.00000.0"),
                             headers=xml)  # fmt: skip
        bad = await capture(http, _xml_receipt(f"Y{tag}", "urn:epc:id:sscc:4012345.0000000001"),
                            headers=xml)  # fmt: skip
    assert good.status_code == 202, good.text
    assert bad.status_code == 400, bad.text
    assert bad.json()["path"] == "$.epcisBody.eventList[0].sourceList[0].source"
    async with collector.client(Role.reader) as http:
        backward = (await http.get(f"/api/v1/lots/01/{GTIN}/10/X{tag}/trace/backward")).json()
    gln = with_check_digit(mill + "00000")
    assert [(r["supplier"], r["supplier_id"]) for r in backward["receipts"]] == [
        (f"(414){gln}", f"(414){gln}")
    ]
