"""Master data in a captured document's header: kept as sent, and merged into the locations
and products the FSMA 204 exports read, by the precedence of epcis/master_data.py (the
ERP's record kept; a partner describes only its own locations)."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import psycopg
import pytest

from cloud_collector import auth
from cloud_collector.auth import Role
from cloud_collector.epcis import master_data
from cloud_collector.fsma204 import kdes
from protocols.gs1 import check_digit as gs1_check_digit
from protocols.gs1 import gtin_of_epc as gtin
from tests.cloud_collector.epcis.documents import capture, epcis_document
from tests.conftest import RunningCollector, Services

BUSINESS_LOCATION = "urn:epcglobal:epcis:vtype:BusinessLocation"
EPC_CLASS = "urn:epcglobal:epcis:vtype:EPCClass"
PARTNER_GLN_PREFIX = "4012345.00088"  # the partner's GLN: 4012345 00088 + check digit


def tag() -> str:
    return f"{uuid.uuid4().int % 10**5:05d}"


def with_master_data(doc: dict[str, Any], *vocabularies: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "epcisHeader": {"epcisMasterData": {"vocabularyList": list(vocabularies)}}}


def vocabulary(vtype: str, element_id: str, **attributes: Any) -> dict[str, Any]:
    return {
        "type": vtype,
        "vocabularyElementList": [
            {
                "id": element_id,
                "attributes": [{"id": k, "attribute": v} for k, v in attributes.items()],
            }
        ],
    }


def place(location: str, name: str | None = "Cold Store Ltd", **more: Any) -> dict[str, Any]:
    """A location element as a 1.x partner writes it (urn:epcglobal:cbv:mda#...)."""
    cbv = "urn:epcglobal:cbv:mda#"
    attributes = {
        cbv + "streetAddressOne": "12 Harbour Rd",
        cbv + "city": "Dayton",
        cbv + "state": "OH",
        cbv + "postalCode": "45402",
        cbv + "countryCode": "US",
        "gs1:telephone": "+1 937 555 0111",
        **more,
    }
    if name is not None:
        attributes[cbv + "name"] = name
    return vocabulary(BUSINESS_LOCATION, location, **attributes)


def receiving(location: str, item: str, lot: str) -> dict[str, Any]:
    """A receipt of a lot of GTIN (4012345, item) at `location`."""
    company = "4012345"
    return {
        "type": "ObjectEvent", "eventTime": "2026-11-20T08:00:00Z",
        "eventTimeZoneOffset": "+00:00", "action": "OBSERVE", "bizStep": "receiving",
        "disposition": "in_progress", "readPoint": {"id": location},
        "bizLocation": {"id": location},
        "quantityList": [{"epcClass": f"urn:epc:class:lgtin:{company}.{item}.{lot}",
                          "quantity": 40, "uom": "KGM"}],
        "bizTransactionList": [{"type": "po", "bizTransaction": f"urn:x-po:PO-{lot}"}],
    }  # fmt: skip


async def rows(services: Services, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        return list(await (await conn.execute(sql, params)).fetchall())


async def location_row(services: Services, location: str) -> tuple[Any, ...] | None:
    found = await rows(
        services,
        "select name, address, phone, gln, partner_id, capture_id is not null"
        " from locations where location_id = %s",
        location,
    )
    return found[0] if found else None


async def product_name(services: Services, product: str) -> str | None:
    found = await rows(services, "select name from products where gtin = %s", product)
    return found[0][0] if found else None


@pytest.fixture
async def partner(services: Services) -> tuple[str, str]:
    """A partner whose location is a whole GLN, and its key."""
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        partner_id = f"MD-{tag()}"
        await auth.set_partner(c, partner_id, [], [f"urn:epc:id:sgln:{PARTNER_GLN_PREFIX}.0"])
        issued = await auth.issue(c, f"md-{uuid.uuid4().hex[:6]}", Role.partner, partner_id)
    return partner_id, issued.key


async def test_master_data_describes_places_and_products_for_the_fsma_export(
    collector: RunningCollector, services: Services
) -> None:
    t = tag()
    location = f"urn:epc:id:sgln:4012345.00091.{t}"
    product = gtin("4012345", "0" + t)
    lot = f"MD-{t}"
    doc = with_master_data(
        epcis_document(receiving(location, "0" + t, lot)),
        place(location),
        vocabulary(
            EPC_CLASS,
            f"urn:epc:idpat:sgtin:4012345.0{t}.*",
            **{"cbvmda:descriptionShort": "Frozen Peas 1 kg", "ex:colour": {"ex:rgb": "0f0"}},
        ),
    )
    async with collector.client(Role.importer) as http:
        answer = await capture(http, doc)
    assert answer.status_code == 202, answer.text
    capture_id = answer.headers["Location"].rsplit("/", 1)[1]
    description = "Cold Store Ltd, 12 Harbour Rd, Dayton, OH 45402, US, +1 937 555 0111"
    assert await location_row(services, location) == (
        "Cold Store Ltd",
        "12 Harbour Rd, Dayton, OH 45402, US",
        "+1 937 555 0111",
        "401234500091" + gs1_check_digit("401234500091"),
        None,
        True,
    )
    assert await product_name(services, product) == "Frozen Peas 1 kg"
    kept = await rows(
        services,
        "select vocabulary_type, element_id, attributes from epcis_vocabulary_elements"
        " where capture_id = %s order by position",
        capture_id,
    )
    assert [(k[0], k[1]) for k in kept] == [
        (BUSINESS_LOCATION, location),
        (EPC_CLASS, f"urn:epc:idpat:sgtin:4012345.0{t}.*"),
    ]
    assert {"id": "ex:colour", "attribute": {"ex:rgb": "0f0"}} in kept[1][2], "kept as sent"
    async with collector.client(Role.reader) as http:
        export = await http.get(f"/api/v1/fsma204/lots/01/{product}/10/{lot}")
    assert export.status_code == 200, export.text
    received = [
        r
        for r in csv.DictReader(io.StringIO(export.text))
        if r["Critical Tracking Event"] == "Receiving"
    ]
    assert len(received) == 1, export.text
    assert received[0][kdes.RECEIVED_AT] == description
    assert received[0][kdes.PRODUCT] == "Frozen Peas 1 kg"
    assert "no location" not in received[0]["Missing KDEs"]


async def test_the_erp_record_is_kept_and_only_its_empty_fields_filled(
    collector: RunningCollector, services: Services
) -> None:
    t = tag()
    location = f"urn:epc:id:sgln:4012345.00092.{t}"
    product = gtin("4012345", "1" + t)
    async with collector.client(Role.importer) as http:
        assert (
            await http.put(
                "/api/v1/erp/locations",
                json=[{"location_id": location, "name": "ERP Name", "address": "ERP Street 1"}],
            )
        ).status_code == 200
        assert (
            await http.put("/api/v1/erp/products", json=[{"gtin": product, "name": "ERP Peas"}])
        ).status_code == 200
        doc = with_master_data(
            epcis_document(),
            place(location, name="Captured Name"),
            vocabulary(
                EPC_CLASS,
                f"https://id.gs1.org/01/{product}",
                **{"urn:epcglobal:cbv:mda#descriptionShort": "Captured Peas"},
            ),
        )
        assert (await capture(http, doc)).status_code == 202
    name, address, phone, _, partner, from_capture = await location_row(services, location) or ()
    assert (name, address) == ("ERP Name", "ERP Street 1"), "the ERP's values stay"
    assert phone == "+1 937 555 0111", "an empty field is filled"
    assert (partner, from_capture) == (None, False), "the row is still the ERP's"
    assert await product_name(services, product) == "ERP Peas"


async def test_our_master_data_replaces_earlier_master_data(
    collector: RunningCollector, services: Services
) -> None:
    t = tag()
    location = f"urn:epc:id:sgln:4012345.00093.{t}"
    async with collector.client(Role.importer) as http:
        first = with_master_data(epcis_document(), place(location, name="Old Name"))
        second = with_master_data(epcis_document(), place(location, name="New Name"))
        assert (await capture(http, first)).status_code == 202
        assert (await capture(http, second)).status_code == 202
        # the ERP import then wins, and makes the row its own
        answer = await http.put(
            "/api/v1/erp/locations", json=[{"location_id": location, "name": "ERP Name"}]
        )
        assert answer.status_code == 200
    row = await location_row(services, location)
    assert row is not None and row[0] == "ERP Name" and row[4:] == (None, False)


async def test_a_partner_describes_only_its_own_locations(
    collector: RunningCollector, services: Services, partner: tuple[str, str]
) -> None:
    partner_id, partner_key = partner
    t = tag()
    ours = f"urn:epc:id:sgln:4012345.00094.{t}"
    own = f"urn:epc:id:sgln:{PARTNER_GLN_PREFIX}.{t}"
    before = await rows(services, "select count(*) from epcis_vocabulary_elements")
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        refused = await capture(
            http, with_master_data(epcis_document(), place(own), place(ours, name="Not Yours"))
        )
        assert refused.status_code == 403, refused.text
        assert ours in refused.json()["detail"]
        assert refused.json()["path"].endswith("vocabularyList[1].vocabularyElementList[0]")
        assert await location_row(services, own) is None, "nothing of a refused document"
        assert await rows(services, "select count(*) from epcis_vocabulary_elements") == before

        # Its own location: described; a new product: named; a product the ERP knows: kept.
        product = gtin("4012345", "2" + t)
        answer = await capture(
            http,
            with_master_data(
                epcis_document(),
                place(own, name="Partner DC"),
                vocabulary(
                    EPC_CLASS,
                    f"urn:epc:idpat:sgtin:4012345.2{t}.*",
                    **{"cbvmda:tradeItemDescription": "Partner Peas"},
                ),
            ),
        )
        assert answer.status_code == 202, answer.text
    assert await location_row(services, own) == (
        "Partner DC", "12 Harbour Rd, Dayton, OH 45402, US", "+1 937 555 0111",
        "401234500088" + gs1_check_digit("401234500088"), partner_id, True,
    )  # fmt: skip
    assert await product_name(services, product) == "Partner Peas"

    # Our own description of that place replaces the partner's; the partner's next one
    # only fills what ours left empty.
    async with collector.client(Role.importer) as http:
        ours_of_it = vocabulary(BUSINESS_LOCATION, own, **{"cbvmda:name": "Partner DC (ours)"})
        assert (
            await capture(http, with_master_data(epcis_document(), ours_of_it))
        ).status_code == 202
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        again = with_master_data(epcis_document(), place(own, name="Renamed by partner"))
        assert (await capture(http, again)).status_code == 202
    row = await location_row(services, own)
    assert row is not None and row[0] == "Partner DC (ours)" and row[4] is None


async def test_a_partner_names_only_products_of_its_own_or_unknown_to_us(
    collector: RunningCollector, services: Services, partner: tuple[str, str]
) -> None:
    """The partner's prefix is 4012345 (its SGLN). Our flour (a GTIN of ours that only our
    lots name, no product record yet) is not its to name; an unknown product of another
    prefix is."""
    partner_id, partner_key = partner
    t = tag()
    ours = gtin("9506000", "7" + t)
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        await c.execute(
            "insert into lots (gtin, lot_code, origin) values (%s, %s, 'supplier')",
            (ours, f"FLOUR-{t}"),
        )

    def named(company: str, item: str, name: str) -> dict[str, Any]:
        pattern = f"urn:epc:idpat:sgtin:{company}.{item}.*"
        return vocabulary(EPC_CLASS, pattern, **{"cbvmda:tradeItemDescription": name})

    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        refused = await capture(
            http, with_master_data(epcis_document(), named("9506000", "7" + t, "Fake Flour"))
        )
        unknown = await capture(
            http, with_master_data(epcis_document(), named("7654321", "3" + t, "Its Beans"))
        )
    assert refused.status_code == 403, refused.text
    assert f"GTIN {ours} is a product we know, not of partner {partner_id!r}" in refused.text
    assert refused.json()["path"].endswith("vocabularyList[0].vocabularyElementList[0]")
    assert await product_name(services, ours) is None
    assert unknown.status_code == 202, unknown.text
    assert await product_name(services, gtin("7654321", "3" + t)) == "Its Beans"


async def test_hostile_master_data_is_refused_whole(
    collector: RunningCollector, services: Services
) -> None:
    t = tag()
    location = f"urn:epc:id:sgln:4012345.00095.{t}"
    deep: Any = "x"
    for _ in range(40):
        deep = {"ex:nested": deep}
    too_many = {
        "type": BUSINESS_LOCATION,
        "vocabularyElementList": [
            {"id": f"{location}{i}"} for i in range(master_data.MAX_ELEMENTS + 1)
        ],
    }
    cases = [
        (place(location, **{"ex:deep": deep}), 400, "$.epcisHeader.epcisMasterData"),
        (too_many, 413, "$.epcisHeader.epcisMasterData"),
        (place(location, name="N" * 201), 400, "$.epcisHeader.epcisMasterData.vocabularyList[0]"),
    ]
    async with collector.client(Role.importer) as http:
        for vocab, status, path in cases:
            doc = with_master_data(epcis_document(), vocab)
            doc["@context"].append({"ex": "https://example.com/ex/"})
            answer = await capture(http, doc)
            assert answer.status_code == status, answer.text
            assert answer.json()["path"].startswith(path), answer.json()
    assert await location_row(services, location) is None
    found = await rows(
        services,
        "select count(*) from epcis_vocabulary_elements where element_id like %s",
        location + "%",
    )
    assert found == [(0,)]


async def test_master_data_in_an_xml_1_2_document(
    collector: RunningCollector, services: Services
) -> None:
    t = tag()
    location = f"urn:epc:id:sgln:4012345.00096.{t}"
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:1" schemaVersion="1.2"
    creationDate="2026-11-25T10:00:00Z" xmlns:ex="https://example.com/ex/">
  <EPCISHeader><extension><EPCISMasterData><VocabularyList>
    <Vocabulary type="urn:epcglobal:epcis:vtype:BusinessLocation"><VocabularyElementList>
      <VocabularyElement id="{location}">
        <attribute id="urn:epcglobal:cbv:mda#name">XML Cold Store</attribute>
        <attribute id="urn:epcglobal:cbv:mda#streetAddressOne">3 Quay St</attribute>
        <attribute id="urn:epcglobal:cbv:mda#city">Toledo</attribute>
        <attribute id="urn:epcglobal:cbv:mda#countryCode">US</attribute>
        <attribute id="https://example.com/ex/dock"><ex:door>7</ex:door></attribute>
        <children><id>{location}1</id></children>
      </VocabularyElement>
    </VocabularyElementList></Vocabulary>
  </VocabularyList></EPCISMasterData></extension></EPCISHeader>
  <EPCISBody><EventList/></EPCISBody>
</epcis:EPCISDocument>"""
    async with collector.client(Role.importer) as http:
        answer = await capture(http, body, headers={"Content-Type": "application/xml"})
    assert answer.status_code == 202, answer.text
    row = await location_row(services, location)
    assert row is not None and row[:3] == ("XML Cold Store", "3 Quay St, Toledo, US", None)
    kept = await rows(
        services,
        "select attributes, children from epcis_vocabulary_elements where element_id = %s",
        location,
    )
    assert kept[0][1] == [f"{location}1"]
    assert {"id": "https://example.com/ex/dock", "attribute": {"ex:door": "7"}} in kept[0][0]
