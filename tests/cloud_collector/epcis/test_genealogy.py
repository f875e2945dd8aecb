"""Captured EPCIS events extend the genealogy like our own events do: a distributor
receives our bread, makes sandwiches of it (its TransformationEvent) and ships them; the
forward trace of our flour then reaches the sandwiches and the distributor's shipment, and
the backward trace of a sandwich reaches our supplier's flour. A partner key captures only
at its own locations and sees only events about the lots shipped to it."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from cloud_collector import auth
from cloud_collector.auth import Role
from cloud_collector.epcis import genealogy_feed
from protocols.gs1 import check_digit as gs1_check_digit
from protocols.gs1 import gtin_of_epc as gtin
from tests.cloud_collector.epcis.documents import capture, epcis_document, events
from tests.cloud_collector.plant import (  # noqa: F401 - the fixture is used by name
    BREAD_GTIN,
    CAKE_GTIN,
    FLOUR_GTIN,
    Plant,
    bakery,
    erp,
    lot_item,
)
from tests.conftest import RunningCollector, Services

SANDWICH_GTIN = gtin("4012345", "077777")
TOAST_GTIN = gtin("4012345", "066666")
DIST_LOCATION = "urn:epc:id:sgln:4012345.00077.0"


def distributor_events(p: Plant) -> list[dict[str, Any]]:
    bread = f"urn:epc:class:lgtin:9506000.013438.{p.lot('BREAD')}"
    sandwich = f"https://id.gs1.org/01/{SANDWICH_GTIN}/10/SW-{p.tag}"
    at = {"readPoint": {"id": f"urn:epc:id:sgln:4012345.00077.{p.tag}"},
          "bizLocation": {"id": DIST_LOCATION}}  # fmt: skip
    return [
        {
            "type": "ObjectEvent", "eventTime": "2026-11-21T08:00:00Z",
            "eventTimeZoneOffset": "+01:00", "action": "OBSERVE", "bizStep": "receiving",
            "disposition": "in_progress", **at,
            "quantityList": [{"epcClass": bread, "quantity": 600, "uom": "EA"}],
            "bizTransactionList": [{"type": "https://ref.gs1.org/cbv/BTT-desadv",
                                    "bizTransaction": f"urn:x-dist:desadv:SH-1-{p.tag}"}],
        },
        {
            "type": "TransformationEvent", "eventTime": "2026-11-21T10:00:00Z",
            "eventTimeZoneOffset": "+01:00", "bizStep": "commissioning",
            "transformationID": f"urn:x-dist:batch:SW-{p.tag}", **at,
            "inputQuantityList": [{"epcClass": bread, "quantity": 300, "uom": "EA"}],
            "outputQuantityList": [{"epcClass": sandwich, "quantity": 300, "uom": "EA"}],
        },
        {
            "type": "ObjectEvent", "eventTime": "2026-11-21T14:00:00Z",
            "eventTimeZoneOffset": "+01:00", "action": "OBSERVE", "bizStep": "shipping",
            "disposition": "in_transit", **at,
            "quantityList": [{"epcClass": sandwich, "quantity": 300, "uom": "EA"}],
            "bizTransactionList": [{"type": "desadv", "bizTransaction": f"DIST-SH-{p.tag}"}],
        },
    ]  # fmt: skip


@pytest.fixture
async def partner_key(bakery: Plant, services: Services) -> str:  # noqa: F811
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        partner = f"DIST-{bakery.tag}"
        await auth.set_partner(c, partner, [f"C1-{bakery.tag}"], [DIST_LOCATION])
        issued = await auth.issue(c, f"dist-{uuid.uuid4().hex[:6]}", Role.partner, partner)
    return issued.key


async def test_a_partners_transformation_extends_our_traces(
    collector: RunningCollector,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    p = bakery
    await erp(collector, p)
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        answer = await capture(http, epcis_document(*distributor_events(p)))
        assert answer.status_code == 202, answer.text
    async with collector.client(Role.reader) as http:
        forward = (
            await http.get(f"/api/v1/lots/(01){FLOUR_GTIN}(10){p.lot('FLOUR')}/trace/forward")
        ).json()
        backward = (
            await http.get(f"/api/v1/lots/01/{SANDWICH_GTIN}/10/SW-{p.tag}/trace/backward")
        ).json()
    assert f"SW-{p.tag}" in [x["lot_code"] for x in forward["lots"]], forward["lots"]
    shipped = [s for s in forward["shipments"] if s["shipment"] == f"DIST-SH-{p.tag}"]
    assert [s["location"] for s in shipped] == [DIST_LOCATION], "the partner's id as sent"
    # Its transformationID, in the partner's own namespace of batch ids.
    sandwich_batch = f"partner:DIST-{p.tag}:urn:x-dist:batch:SW-{p.tag}"
    assert sandwich_batch in [b["batch"]["batch_id"] for b in forward["batches"]]
    assert p.lot("FLOUR") in [x["lot_code"] for x in backward["lots"]], backward["lots"]
    assert p.lot("BREAD") in [x["lot_code"] for x in backward["lots"]]


async def test_a_partner_captures_only_at_its_own_locations(
    collector: RunningCollector,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    p = bakery
    elsewhere = distributor_events(p)[:1]
    elsewhere[0]["bizLocation"] = {"id": "urn:epc:id:sgln:9506000.00001.0"}
    elsewhere[0]["readPoint"] = {"id": "urn:epc:id:sgln:9506000.00001.7"}
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        answer = await capture(http, epcis_document(*distributor_events(p)[1:], *elsewhere))
    assert answer.status_code == 403
    assert "urn:epc:id:sgln:9506000.00001.0" in answer.json()["detail"]
    async with collector.client(Role.reader) as http:
        assert await events(http, EQ_transformationID=f"urn:x-dist:batch:SW-{p.tag}") == []


async def test_a_partner_sees_only_events_about_lots_shipped_to_it(
    collector: RunningCollector,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    p = bakery
    await erp(collector, p)  # SH-1 (bread) went to the partner's customer; SH-2 (cake) not
    bread = f"https://id.gs1.org/01/{BREAD_GTIN}/10/{p.lot('BREAD')}"
    cake = f"https://id.gs1.org/01/{CAKE_GTIN}/10/{p.lot('CAKE')}"
    async with collector.client() as http:
        everything = await events(http, EQ_bizStep="shipping", MATCH_epcClass=f"{bread}|{cake}")
        http.headers["Authorization"] = f"Bearer {partner_key}"
        seen = await events(http, EQ_bizStep="shipping", MATCH_epcClass=f"{bread}|{cake}")
        batches = await events(http, eventType="TransformationEvent", MATCH_anyEPCClass=bread)
    assert len(everything) == 2
    assert [e["quantityList"][0]["epcClass"] for e in seen] == [bread]
    assert batches == [], "how the bread was made is not the distributor's to see"


async def test_a_partners_batch_ids_never_meet_ours(
    collector: RunningCollector,
    services: Services,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    """The partner names its batch as ours that made the bread (B2): it is its own batch,
    in its own namespace; ours keeps its inputs and outputs."""
    p = bakery
    await erp(collector, p)
    intrusion = distributor_events(p)[1]
    intrusion["transformationID"] = f"B2-{p.tag}"
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        answer = await capture(http, epcis_document(distributor_events(p)[0], intrusion))
    assert answer.status_code == 202, answer.text
    async with await psycopg.AsyncConnection.connect(services.database_url) as c:
        cur = await c.execute(
            "select b.batch_id, b.edge_id, (select array_agg(l.lot_code order by l.lot_code)"
            " from lot_links k join lots l on l.lot_id = k.input_lot"
            " where k.batch_id = b.batch_id) from batches b where b.batch_id like %s"
            " order by b.batch_id",
            (f"%B2-{p.tag}",),
        )
        rows = await cur.fetchall()
    assert rows == [
        (f"B2-{p.tag}", p.edge, [p.lot("DOUGH")]),
        (f"partner:DIST-{p.tag}:B2-{p.tag}", f"epcis:DIST-{p.tag}", [p.lot("BREAD")]),
    ]


async def test_a_partner_declares_errors_only_in_its_own_events(
    collector: RunningCollector,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    p = bakery
    event = {**distributor_events(p)[0], "eventID": f"urn:uuid:{uuid.uuid4()}"}
    declared = {
        **event,
        "errorDeclaration": {"declarationTime": "2026-11-22T09:00:00Z", "reason": "did_not_occur"},
    }
    async with collector.client(Role.importer) as http:  # our own ERP captured it
        assert (await capture(http, epcis_document(event))).status_code == 202
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        refused = await capture(http, epcis_document(declared))
    assert refused.status_code == 403, refused.text
    assert event["eventID"] in refused.json()["detail"]
    async with collector.client(Role.reader) as http:
        [stored] = await events(http, EQ_eventID=event["eventID"])
    assert "errorDeclaration" not in stored


def shipping(p: Plant, epc_class: str, shipment: str, where: str = DIST_LOCATION) -> dict:
    return {
        "type": "ObjectEvent", "eventTime": "2026-11-22T08:00:00Z",
        "eventTimeZoneOffset": "+01:00", "action": "OBSERVE", "bizStep": "shipping",
        "disposition": "in_transit", "bizLocation": {"id": where},
        "quantityList": [{"epcClass": epc_class, "quantity": 10, "uom": "EA"}],
        "bizTransactionList": [{"type": "desadv", "bizTransaction": shipment}],
    }  # fmt: skip


async def test_a_partner_cannot_ship_a_lot_never_shipped_to_it(
    collector: RunningCollector,
    services: Services,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    """The cake went to nobody of the partner's; the partner claims to ship it on, under the
    id of our shipment to it (SH-1, the bread's): refused, and the cake stays out of its
    sight and in our stock."""
    p = bakery
    await erp(collector, p)
    cake = f"https://id.gs1.org/01/{CAKE_GTIN}/10/{p.lot('CAKE')}"
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        answer = await capture(http, epcis_document(shipping(p, cake, f"SH-1-{p.tag}")))
    assert answer.status_code == 403, answer.text
    assert (
        f"lot '{p.lot('CAKE')}' of GTIN {CAKE_GTIN} was never shipped to partner"
        in (answer.json()["detail"])
    )
    async with await psycopg.AsyncConnection.connect(services.database_url) as c:
        visible = [x.lot_code for x in await auth.visible_lots(c, f"DIST-{p.tag}")]
    async with collector.client(Role.reader) as http:
        recall = await http.get(f"/api/v1/lots/01/{CAKE_GTIN}/10/{p.lot('CAKE')}/recall")
    assert visible == [p.lot("BREAD")]
    assert ("on_hand", 300.0, "line-1") in [
        (x["status"], x["quantity"], x["location"]) for x in recall.json()["lines"]
    ]


def quantity_event(p: Plant, step: str, epc_class: str, quantity: float, doc: str) -> dict:
    return {
        "type": "ObjectEvent", "eventTime": "2026-11-22T08:00:00Z",
        "eventTimeZoneOffset": "+01:00", "action": "OBSERVE", "bizStep": step,
        "readPoint": {"id": DIST_LOCATION}, "bizLocation": {"id": DIST_LOCATION},
        "quantityList": [{"epcClass": epc_class, "quantity": quantity, "uom": "EA"}],
        "bizTransactionList": [{"type": "desadv", "bizTransaction": doc}],
    }  # fmt: skip


async def test_a_partner_moves_no_more_than_was_shipped_to_it_and_never_our_stock(
    collector: RunningCollector,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    """We ship the partner 100 of our 400 cakes (SH-2 to its customer): it may receive and
    ship on those 100, not 101; what it does with them leaves our 300 where they are."""
    p = bakery
    await erp(collector, p)
    async with collector.client(Role.importer) as http:
        put = await http.put(
            "/api/v1/erp/shipments",
            json=[{"shipment": f"SH-2-{p.tag}", "customer_id": f"C1-{p.tag}"}],
        )
        assert put.status_code == 200, put.text
    cake = f"https://id.gs1.org/01/{CAKE_GTIN}/10/{p.lot('CAKE')}"
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        too_much = await capture(
            http, epcis_document(quantity_event(p, "receiving", cake, 101, f"SH-2-{p.tag}"))
        )
        received = await capture(
            http, epcis_document(quantity_event(p, "receiving", cake, 100, f"SH-2-{p.tag}"))
        )
        shipped = await capture(
            http, epcis_document(quantity_event(p, "shipping", cake, 60, f"D1-{p.tag}"))
        )
        again = await capture(
            http, epcis_document(quantity_event(p, "shipping", cake, 41, f"D2-{p.tag}"))
        )
    assert too_much.status_code == 403, too_much.text
    assert (
        f"lot '{p.lot('CAKE')}' of GTIN {CAKE_GTIN}: partner 'DIST-{p.tag}' receives 101 EA "
        "here and 0 EA before, more than the 100 EA shipped to it"
    ) in too_much.json()["detail"]
    assert received.status_code == 202 and shipped.status_code == 202, shipped.text
    assert again.status_code == 403, again.text
    assert (
        "ships or uses 41 EA here and 60 EA before, more than the 100 EA"
        in (again.json()["detail"])
    )
    async with collector.client(Role.reader) as http:
        recall = (await http.get(f"/api/v1/lots/01/{CAKE_GTIN}/10/{p.lot('CAKE')}/recall")).json()
    left = [(x["quantity"], x["location"]) for x in recall["lines"] if x["status"] == "on_hand"]
    # Our 300 cakes are still ours, on line-1 where they were made (our shipment took its
    # 100 from there); the partner's lines are its own.
    assert left == [(300.0, "line-1")]
    assert recall["lot"]["quantity"] == 400.0


async def test_a_partners_label_never_moves_our_unit_into_another_lot(
    collector: RunningCollector,
    services: Services,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    p = bakery
    await erp(collector, p)
    serial = f"{uuid.uuid4().int % 10**9}"
    case = {"epc": f"https://id.gs1.org/01/{BREAD_GTIN}/21/{serial}", "gtin": BREAD_GTIN,
            "serial": serial, "lot": p.lot("BREAD")}  # fmt: skip
    await p.post(p.shipment([case], f"SH-1-{p.tag}"))
    relabelled = f"https://id.gs1.org/01/{BREAD_GTIN}/10/OTHER-{p.tag}/21/{serial}"
    receipt = {**quantity_event(p, "receiving", "x", 1, f"SH-1-{p.tag}"), "epcList": [relabelled]}
    receipt.pop("quantityList")
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        answer = await capture(http, epcis_document(receipt))
    assert answer.status_code == 202, answer.text
    async with await psycopg.AsyncConnection.connect(services.database_url) as c:
        cur = await c.execute(
            "select l.lot_code from units u join lots l using (lot_id) where u.epc = %s",
            (f"sgtin:{BREAD_GTIN}.{serial}",),
        )
        assert await cur.fetchall() == [(p.lot("BREAD"),)]


async def test_a_partners_event_from_the_future_is_refused(
    collector: RunningCollector,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    p = bakery
    await erp(collector, p)
    event = {**distributor_events(p)[0], "eventTime": "2099-01-01T00:00:00Z"}
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        answer = await capture(http, epcis_document(event))
    assert answer.status_code == 400, answer.text
    assert "2099-01-01T00:00:00Z is more than 0:05:00 ahead of our clock" in answer.text


async def test_a_partner_makes_only_products_of_its_own(
    collector: RunningCollector,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    p = bakery
    await erp(collector, p)
    ours = distributor_events(p)[1]
    ours["outputQuantityList"] = [
        {"epcClass": f"https://id.gs1.org/01/{CAKE_GTIN}/10/FAKE-{p.tag}", "quantity": 1}
    ]
    unknown = gtin("7654321", "000011")  # a prefix that is not the partner's, unknown here
    theirs = {
        **distributor_events(p)[1],
        "transformationID": f"urn:x-dist:batch:U-{p.tag}",
        "outputQuantityList": [
            {"epcClass": f"https://id.gs1.org/01/{unknown}/10/U-{p.tag}", "quantity": 1}
        ],
    }
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        refused = await capture(http, epcis_document(distributor_events(p)[0], ours))
        accepted = await capture(http, epcis_document(distributor_events(p)[0], theirs))
    assert refused.status_code == 403, refused.text
    assert f"GTIN {CAKE_GTIN} is a product we know, not of partner" in refused.json()["detail"]
    assert accepted.status_code == 202, accepted.text


DIST_GLN = "4012345000771"  # DIST_LOCATION's GLN


@pytest.mark.parametrize(
    "location",
    [
        DIST_LOCATION,
        f"https://id.gs1.org/414/{DIST_GLN}/254/7",
        f"https://partner.example.com/414/{DIST_GLN}",
        f"414/{DIST_GLN}",
        DIST_GLN,
    ],
)
async def test_a_partners_company_prefix_is_that_of_its_location_in_any_form(
    services: Services, location: str
) -> None:
    t = f"{uuid.uuid4().int % 10**5:05d}"
    its_own, ours = gtin("4012345", "3" + t), gtin("7654321", "3" + t)
    assert its_own is not None and ours is not None
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        partner = f"PFX-{uuid.uuid4().hex[:8]}"
        await auth.set_partner(c, partner, [], [location])
        for product in (its_own, ours):  # both known here, neither the partner's by record
            await c.execute(
                "insert into products (gtin, name) values (%s, %s) on conflict do nothing",
                (product, f"Product {t}"),
            )
        assert await genealogy_feed.product_not_its_own(c, [its_own], partner) is None
        refused = await genealogy_feed.product_not_its_own(c, [ours, its_own], partner)
    assert refused == (ours, ["4012345"]), "the prefix its URN form gives"


async def test_a_partner_sees_our_shipments_to_it_and_its_own_events_only(
    collector: RunningCollector,
    services: Services,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    """The bread went to the partner's customer (SH-1) and to another customer (SH-3);
    another distributor received it; we made toast of what came back. Of all that, the
    partner sees our shipment to it and what it captured itself."""
    p = bakery
    await erp(collector, p)
    bread_item = lot_item(BREAD_GTIN, p.lot("BREAD"), 5, "EA")
    await p.post(
        p.shipment([bread_item], f"SH-3-{p.tag}"),
        p.batch(f"B4-{p.tag}", [bread_item], [lot_item(TOAST_GTIN, p.lot("TOAST"), 5, "EA")]),
    )
    async with collector.client(Role.importer) as http:
        await http.put("/api/v1/erp/customers", json=[{"customer_id": f"C2-{p.tag}", "name": "X"}])
        put = await http.put(
            "/api/v1/erp/shipments",
            json=[{"shipment": f"SH-3-{p.tag}", "order_id": f"SO-3-{p.tag}",
                   "customer_id": f"C2-{p.tag}", "ship_to": "Elsewhere Ltd"}],
        )  # fmt: skip
        assert put.status_code == 200, put.text
    other_location = "urn:epc:id:sgln:4012345.00088.0"
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        await auth.set_partner(c, f"OTHER-{p.tag}", [f"C2-{p.tag}"], [other_location])
        other = await auth.issue(c, f"other-{uuid.uuid4().hex[:6]}", Role.partner, f"OTHER-{p.tag}")
    bread = f"https://id.gs1.org/01/{BREAD_GTIN}/10/{p.lot('BREAD')}"
    receipt = {**distributor_events(p)[0], "readPoint": {"id": other_location},
               "bizLocation": {"id": other_location},
               "quantityList": [{"epcClass": f"urn:epc:class:lgtin:9506000.013438.{p.lot('BREAD')}",
                                 "quantity": 5, "uom": "EA"}]}  # fmt: skip
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {other.key}"
        assert (await capture(http, epcis_document(receipt))).status_code == 202
        http.headers["Authorization"] = f"Bearer {partner_key}"
        own = distributor_events(p)[0]
        assert (await capture(http, epcis_document(own))).status_code == 202
        seen = await events(http, MATCH_anyEPCClass=bread, orderBy="eventTime")
    async with collector.client(Role.reader) as http:
        everything = await events(http, MATCH_anyEPCClass=bread)
    assert len(everything) == 6  # made, SH-1, SH-3, toast, two receipts
    shipped = [e for e in seen if e["bizStep"] == "shipping"]
    assert [t["bizTransaction"] for e in shipped for t in e["bizTransactionList"]] == [
        f"urn:x-trace:bt:desadv:SH-1-{p.tag}"
    ]
    theirs = [e for e in seen if e["bizStep"] != "shipping"]
    assert [e["bizLocation"]["id"] for e in theirs] == [DIST_LOCATION], "its receipt only"


async def test_a_partner_cannot_make_a_lot_of_ours(
    collector: RunningCollector,
    services: Services,
    bakery: Plant,  # noqa: F811
    partner_key: str,
) -> None:
    p = bakery
    await erp(collector, p)  # the bread went to the partner: it may use it
    intrusion = distributor_events(p)[1]
    bread = f"urn:epc:class:lgtin:9506000.013438.{p.lot('BREAD')}"
    intrusion["outputQuantityList"] = [{"epcClass": bread, "quantity": 1, "uom": "EA"}]
    # Its own new lot, shipped before the batch that makes it is captured: still its own.
    own = f"https://id.gs1.org/01/{SANDWICH_GTIN}/10/SW2-{p.tag}"
    made_later = {
        **distributor_events(p)[1],
        "transformationID": f"urn:x-dist:batch:2-{p.tag}",
        "outputQuantityList": [{"epcClass": own, "quantity": 1, "uom": "EA"}],
    }
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        refused = await capture(http, epcis_document(intrusion))
        shipped_first = await capture(http, epcis_document(shipping(p, own, f"DS-{p.tag}")))
        accepted = await capture(http, epcis_document(made_later))
    assert refused.status_code == 403, refused.text
    assert p.lot("BREAD") in refused.json()["detail"]
    assert shipped_first.status_code == 202 and accepted.status_code == 202, accepted.text
    async with await psycopg.AsyncConnection.connect(services.database_url) as c:
        cur = await c.execute(
            "select distinct k.batch_id from lot_links k join lots l on l.lot_id = k.output_lot"
            " where l.gtin = %s and l.lot_code = %s",
            (BREAD_GTIN, p.lot("BREAD")),
        )
        makers = [r[0] for r in await cur.fetchall()]
    assert makers == [f"B2-{p.tag}"]


# Our pallet of flour as the gate and the line know it: received with its label (SSCC +
# GTIN + lot), or read by the gate before anyone scanned its label (no lot yet). Either way
# it is ours, not a unit a partner's batch may claim as its output.
OUR_PALLETS = {
    "labelled": {"gtin": FLOUR_GTIN, "lot": "FLOUR", "quantity": 500, "uom": "KGM"},
    "tag only": {},
}


@pytest.mark.parametrize("known_as", OUR_PALLETS)
async def test_a_partner_cannot_make_a_unit_of_ours(
    collector: RunningCollector,
    services: Services,
    bakery: Plant,  # noqa: F811
    partner_key: str,
    known_as: str,
) -> None:
    p = bakery
    serial_ref = f"{uuid.uuid4().int % 10**9:09d}"
    body = "0" + "9506000" + serial_ref
    sscc = body + gs1_check_digit(body)
    label = dict(OUR_PALLETS[known_as])
    if "lot" in label:
        label["lot"] = p.lot(label["lot"])
    pallet = {"epc": f"urn:epc:id:sscc:9506000.0{serial_ref}", "sscc": sscc, **label}
    await p.post(p.receipt([pallet], f"PO-{serial_ref}-{p.tag}"))
    intrusion = {
        **distributor_events(p)[1],
        "transformationID": f"urn:x-dist:batch:{serial_ref}-{p.tag}",
        "outputEPCList": [pallet["epc"]],
    }
    intrusion.pop("outputQuantityList")
    async with collector.client() as http:
        http.headers["Authorization"] = f"Bearer {partner_key}"
        refused = await capture(http, epcis_document(intrusion))
    assert refused.status_code == 403, refused.text
    assert sscc in refused.json()["detail"]
    async with await psycopg.AsyncConnection.connect(services.database_url) as c:
        cur = await c.execute(
            "select l.lot_code from units u left join lots l using (lot_id) where u.sscc = %s",
            (sscc,),
        )
        assert [r[0] for r in await cur.fetchall()] == [label.get("lot")]


async def test_our_own_batch_ids_stay_out_of_the_partners_namespace(
    collector: RunningCollector,
    bakery: Plant,  # noqa: F811
) -> None:
    """A capture with our own key cannot pass a batch off as a partner's."""
    p = bakery
    posing = {**distributor_events(p)[1], "transformationID": f"partner:DIST-{p.tag}:x"}
    async with collector.client(Role.importer) as http:
        answer = await capture(http, epcis_document(posing))
    assert answer.status_code == 400, answer.text
    assert "the namespace of partners' batches" in answer.text
