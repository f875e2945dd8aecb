"""Warehouse events captured through /epcis/capture from a WMS (our own importer key): the
master data describes the warehouse and its bins (children, trace:placeKind), a receipt's
ILMD gives the lot's expiry, a `storing` event with a `sourceList` location moves goods
from one bin to another, and a `stock_taking` count sets a bin's quantity."""

from __future__ import annotations

import uuid
from typing import Any

from cloud_collector.auth import Role
from protocols.gs1 import gtin_of_epc
from tests.cloud_collector.epcis.documents import capture, epcis_document
from tests.cloud_collector.epcis.test_master_data import BUSINESS_LOCATION, with_master_data
from tests.conftest import RunningCollector

GTIN = gtin_of_epc("4012345", "022222")
KIND = "urn:x-trace:epcis:placeKind"
NAME = "urn:epcglobal:cbv:mda:name"


def sgln(t: str, extension: str) -> str:
    return f"urn:epc:id:sgln:4012345.{t}.{extension}"


def element(place: str, name: str, kind: Any, children: list[str] | None = None) -> dict:
    return {
        "id": place,
        "attributes": [{"id": NAME, "attribute": name}, {"id": KIND, "attribute": kind}],
        **({"children": children} if children else {}),
    }


def master_data(t: str, bin_kind: Any = "bin") -> dict[str, Any]:
    return {
        "type": BUSINESS_LOCATION,
        "vocabularyElementList": [
            element(sgln(t, "0"), "Cold store", "warehouse", [sgln(t, "B1"), sgln(t, "B2")]),
            element(sgln(t, "B1"), "Bin 1", bin_kind),
            element(sgln(t, "B2"), "Bin 2", "bin"),
        ],
    }


def event(t: str, step: str, quantity: float, at: str, time: str, **more: Any) -> dict:
    lot = f"urn:epc:class:lgtin:4012345.022222.WMS-{t}"
    return {
        "type": "ObjectEvent", "eventTime": time, "eventTimeZoneOffset": "+00:00",
        "action": "OBSERVE", "bizStep": step, "readPoint": {"id": at},
        "bizLocation": {"id": at},
        "quantityList": [{"epcClass": lot, "quantity": quantity, "uom": "KGM"}], **more,
    }  # fmt: skip


async def test_a_wms_describes_its_bins_and_moves_and_counts_stock_through_capture(
    collector: RunningCollector,
) -> None:
    t = f"{uuid.uuid4().int % 10**5:05d}"
    b1, b2 = sgln(t, "B1"), sgln(t, "B2")
    received = event(t, "receiving", 100, b1, "2026-11-20T08:00:00Z", action="ADD",
                     ilmd={"cbvmda:itemExpirationDate": "2027-03-01"})  # fmt: skip
    moved = event(t, "storing", 40, "urn:epc:id:sgln:4012345.00001.FORK", "2026-11-20T09:00:00Z",
                  sourceList=[{"type": "location", "source": b1}])  # fmt: skip
    moved["bizLocation"] = {"id": b2}
    counted = event(t, "stock_taking", 35, b2, "2026-11-20T10:00:00Z")
    doc = with_master_data(epcis_document(received, moved, counted), master_data(t))
    async with collector.client(Role.importer) as api:
        answer = await capture(api, doc)
        assert answer.status_code == 202, answer.text
    async with collector.client(Role.reader) as api:
        lot = f"01/{GTIN}/10/WMS-{t}"
        placed = (await api.get(f"/api/v1/lots/{lot}/places")).json()
        within = (await api.get("/api/v1/places", params={"within": sgln(t, "0")})).json()
        advice = (
            await api.get(f"/api/v1/places/{sgln(t, '0')}/pick-advice", params={"gtin": GTIN})
        ).json()
    assert {p["place"]: p["quantity"] for p in placed["places"]} == {b1: 60.0, b2: 35.0}
    assert [(c["counted"], c["expected"], c["difference"]) for c in placed["counts"]] == [
        (35.0, 40.0, -5.0)
    ]
    assert [(p["location_id"], p["kind"], p["parent_id"]) for p in within] == [
        (sgln(t, "0"), "warehouse", None),
        (b1, "bin", sgln(t, "0")),
        (b2, "bin", sgln(t, "0")),
    ]
    assert advice["rule"] == "FEFO"
    assert [(x["place"], x["expiry"]) for x in advice["lots"]] == [
        (b1, "2027-03-01"),
        (b2, "2027-03-01"),
    ]


async def test_a_place_kind_outside_the_hierarchy_refuses_the_document_with_its_path(
    collector: RunningCollector,
) -> None:
    t = f"{uuid.uuid4().int % 10**5:05d}"
    doc = with_master_data(epcis_document(), master_data(t, bin_kind="shelf"))
    async with collector.client(Role.importer) as api:
        answer = await capture(api, doc)
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["path"].endswith("vocabularyElementList[1].attributes")
    assert "'shelf'" in problem["reason"]
