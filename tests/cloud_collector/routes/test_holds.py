"""Holds through the HTTP API on the bakery of tests/cloud_collector/plant.py:
FLOUR + SUGAR --B1--> DOUGH --B2--> BREAD (shipped), DOUGH + SUGAR --B3--> CAKE."""

from __future__ import annotations

import csv
import io
import os
import uuid
from datetime import datetime

import httpx
import psycopg

from cloud_collector.auth import Role
from tests.cloud_collector.epcis.documents import capture, epcis_document
from tests.cloud_collector.plant import (
    BREAD_GTIN,
    CAKE_GTIN,
    DOUGH_GTIN,
    FLOUR_GTIN,
    SUGAR_GTIN,
    Plant,
    lot_item,
)
from tests.conftest import RunningCollector, Services


def lot_path(gtin: str, code: str) -> str:
    return f"/api/v1/lots/01/{gtin}/10/{code}"


async def post(
    collector: RunningCollector, path: str, body: dict, role: Role = Role.quality
) -> httpx.Response:
    async with collector.client(role) as api:
        return await api.post(path, json=body)


async def get(
    collector: RunningCollector, path: str, role: Role = Role.reader, **params: str
) -> httpx.Response:
    async with collector.client(role) as api:
        return await api.get(path, params=params or None)  # None: keep the path's own query


async def test_changes_need_the_quality_role_and_reads_a_reader_or_quality_key(
    bakery: Plant, collector: RunningCollector
) -> None:
    dough = lot_path(DOUGH_GTIN, bakery.lot("DOUGH"))
    async with httpx.AsyncClient(base_url=collector.api_url) as anonymous:
        assert (await anonymous.post(f"{dough}/hold", json={"reason": "x"})).status_code == 401
        assert (await anonymous.get("/api/v1/holds")).status_code == 401
    for role in (Role.reader, Role.importer, Role.provisioner):
        refused = await post(collector, f"{dough}/hold", {"reason": "pH"}, role)
        assert refused.status_code == 403, role
        assert "quality" in refused.text
    assert (await get(collector, "/api/v1/holds", Role.importer)).status_code == 403
    assert (await get(collector, "/api/v1/alerts", Role.provisioner)).status_code == 403
    assert (await post(collector, f"{dough}/hold", {"reason": "pH"}, Role.admin)).status_code == 201
    assert (await get(collector, "/api/v1/holds", Role.quality)).status_code == 200
    assert (await get(collector, "/api/v1/holds", Role.reader)).status_code == 200


async def test_hold_release_and_the_history_of_who_and_why(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    flour = lot_path(FLOUR_GTIN, p.lot("FLOUR"))
    for bad in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x", "color": "red"}):
        assert (await post(collector, f"{flour}/hold", bad)).status_code == 422, bad
    assert (await post(collector, f"{flour}/hold", {"reason": "a\x00b"})).status_code == 422
    unknown = await post(collector, lot_path(FLOUR_GTIN, "NO-SUCH-LOT") + "/hold", {"reason": "x"})
    assert unknown.status_code == 404

    held = await post(collector, f"{flour}/hold", {"reason": "  aflatoxin suspected  "})
    assert held.status_code == 201, held.text
    hold = held.json()["hold"]
    quality_key = f"test-{os.getpid()}-quality"  # the key's name (conftest.issue_keys)
    assert (hold["lot_code"], hold["reason"], hold["held_by"], hold["in_force"]) == (
        p.lot("FLOUR"),
        "aflatoxin suspected",
        quality_key,
        True,
    )
    assert held.json()["downstream"] == [] and held.json()["already_held"] == []

    again = await post(collector, f"{flour}/hold", {"reason": "another"})
    assert again.status_code == 409
    assert again.json()["detail"]["hold"]["hold_id"] == hold["hold_id"]
    assert "aflatoxin suspected" in again.json()["detail"]["message"]

    in_force = (await get(collector, "/api/v1/holds")).json()
    assert hold["hold_id"] in [h["hold_id"] for h in in_force]

    released = await post(collector, f"{flour}/release", {"reason": "lab: below limit"}, Role.admin)
    assert released.status_code == 200, released.text
    [freed] = released.json()["released"]
    assert (freed["released_by"], freed["release_reason"], freed["in_force"]) == (
        f"test-{os.getpid()}-admin",
        "lab: below limit",
        False,
    )
    assert datetime.fromisoformat(freed["released_at"]) >= datetime.fromisoformat(freed["held_at"])
    not_held = await post(collector, f"{flour}/release", {"reason": "again"})
    assert not_held.status_code == 409 and "not on hold" in not_held.text

    # Held again later: the history keeps both, newest first.
    assert (await post(collector, f"{flour}/hold", {"reason": "second look"})).status_code == 201
    history = (await get(collector, f"{flour}/holds")).json()
    assert [(h["reason"], h["in_force"]) for h in history] == [
        ("second look", True),
        ("aflatoxin suspected", False),
    ]
    released_list = (await get(collector, "/api/v1/holds", state="released")).json()
    assert hold["hold_id"] in [h["hold_id"] for h in released_list]
    in_force_now = (await get(collector, "/api/v1/holds")).json()
    assert hold["hold_id"] not in [h["hold_id"] for h in in_force_now]


async def test_downstream_hold_and_release_leave_a_separate_hold_alone(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    cake = lot_path(CAKE_GTIN, p.lot("CAKE"))
    dough = lot_path(DOUGH_GTIN, p.lot("DOUGH"))
    assert (await post(collector, f"{cake}/hold", {"reason": "cake on its own"})).status_code == 201
    held = await post(collector, f"{dough}/hold", {"reason": "dough pH", "downstream": True})
    assert held.status_code == 201, held.text
    body = held.json()
    origin = body["hold"]["hold_id"]
    assert [(h["lot_code"], h["origin_hold"]) for h in body["downstream"]] == [
        (p.lot("BREAD"), origin)
    ]
    assert [(h["lot_code"], h["reason"]) for h in body["already_held"]] == [
        (p.lot("CAKE"), "cake on its own")
    ]
    # Upstream lots are not touched.
    assert (await get(collector, lot_path(FLOUR_GTIN, p.lot("FLOUR")) + "/holds")).json() == []

    freed = await post(collector, f"{dough}/release", {"reason": "ok", "downstream": True})
    assert sorted(h["lot_code"] for h in freed.json()["released"]) == sorted(
        [p.lot("DOUGH"), p.lot("BREAD")]
    )
    [cake_hold] = (await get(collector, f"{cake}/holds")).json()
    assert cake_hold["in_force"] and cake_hold["reason"] == "cake on its own"


async def test_holds_appear_in_traces_and_recalls(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    sugar = lot_path(SUGAR_GTIN, p.lot("SUGAR"))
    bread = lot_path(BREAD_GTIN, p.lot("BREAD"))
    held = await post(collector, f"{bread}/hold", {"reason": "metal detector alarm"})
    assert held.status_code == 201
    since = held.json()["hold"]["held_at"]

    forward = (await get(collector, f"{sugar}/trace/forward")).json()
    flags = {x["lot_code"]: (x["held"], x["hold_reason"], x["held_since"]) for x in forward["lots"]}
    assert flags[p.lot("BREAD")] == (True, "metal detector alarm", since)
    assert flags[p.lot("CAKE")] == (False, None, None)
    backward = (await get(collector, f"{bread}/trace/backward")).json()
    assert backward["lot"]["held"] is True and backward["lot"]["held_by"].endswith("-quality")

    recall = (await get(collector, f"{sugar}/recall")).json()
    lines = [x for x in recall["lines"] if x["lot_code"] == p.lot("BREAD")]
    assert lines and all(
        (x["held"], x["hold_reason"], x["held_since"]) == (True, "metal detector alarm", since)
        for x in lines
    )
    assert not any(x["held"] for x in recall["lines"] if x["lot_code"] != p.lot("BREAD"))
    spreadsheet = (await get(collector, f"{sugar}/recall", format="csv")).text
    rows = list(csv.DictReader(io.StringIO(spreadsheet)))
    assert {r["held"] for r in rows if r["lot_code"] == p.lot("BREAD")} == {"t"}
    assert {r["hold_reason"] for r in rows if r["lot_code"] == p.lot("BREAD")} == {
        "metal detector alarm"
    }

    await post(collector, f"{bread}/release", {"reason": "false alarm"})
    after = (await get(collector, f"{sugar}/recall")).json()
    assert not any(x["held"] for x in after["lines"])


async def test_a_shipment_flagged_held_lot_records_an_alert(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    cake = lot_path(CAKE_GTIN, p.lot("CAKE"))
    hold = (await post(collector, f"{cake}/hold", {"reason": "label misprint"})).json()["hold"]
    flagged = p.shipment([lot_item(CAKE_GTIN, p.lot("CAKE"), 10, "EA")], f"SH-9-{p.tag}")
    plain = p.shipment([lot_item(CAKE_GTIN, p.lot("CAKE"), 5, "EA")], f"SH-10-{p.tag}")
    await p.post(flagged | {"flags": ["held_lot"]}, plain)
    alerts = (await get(collector, "/api/v1/alerts", kind="held_lot_at_door")).json()
    mine = [a for a in alerts if a["event_id"].startswith(p.edge)]
    assert len(mine) == 1  # the unflagged event raised none
    [alert] = mine
    assert (alert["source_edge"], alert["read_point"], alert["biz_step"]) == (
        p.edge,
        "dock-2",
        "shipping",
    )
    assert alert["documents"] == [{"type": "desadv", "id": f"SH-9-{p.tag}"}]
    assert alert["summary"] == f"held lot {p.lot('CAKE')} shipped at dock-2"
    assert [(x["lot_code"], x["hold_id"], x["reason"]) for x in alert["lots"]] == [
        (p.lot("CAKE"), hold["hold_id"], "label misprint")
    ]
    naive = await get(collector, "/api/v1/alerts", since="2026-01-01T00:00:00")
    assert naive.status_code == 422 and "UTC offset" in naive.text


def _captured_shipment(gtin: str, lot: str, step: str = "shipping") -> dict:
    return {
        "type": "ObjectEvent",
        "eventID": f"urn:uuid:{uuid.uuid4()}",
        "eventTime": "2026-11-21T09:00:00Z",
        "eventTimeZoneOffset": "+01:00",
        "action": "OBSERVE",
        "bizStep": step,
        "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.0"},
        "quantityList": [
            {"epcClass": f"https://id.gs1.org/01/{gtin}/10/{lot}", "quantity": 5, "uom": "EA"}
        ],
    }


async def test_a_captured_shipment_of_a_held_lot_raises_the_alert_and_shows_in_its_record(
    bakery: Plant, collector: RunningCollector, services: Services
) -> None:
    """Not only our doors: a shipment of a held lot captured through /epcis/capture (a WMS,
    a partner) is flagged and alerted as an edge's would be; a receipt of it, or a shipment
    of a lot not held, raises nothing."""
    p = bakery
    cake = lot_path(CAKE_GTIN, p.lot("CAKE"))
    hold = (await post(collector, f"{cake}/hold", {"reason": "allergen label"})).json()["hold"]
    shipped = _captured_shipment(CAKE_GTIN, p.lot("CAKE"))
    received = _captured_shipment(CAKE_GTIN, p.lot("CAKE"), "receiving")
    other = _captured_shipment(BREAD_GTIN, p.lot("BREAD"))
    async with collector.client(Role.importer) as api:
        answer = await capture(api, epcis_document(shipped, received, other))
    assert answer.status_code == 202, answer.text

    alerts = (await get(collector, "/api/v1/alerts", kind="held_lot_at_door")).json()
    ids = {shipped["eventID"], received["eventID"], other["eventID"]}
    [alert] = [a for a in alerts if a["event_id"] in ids]
    assert (alert["event_id"], alert["biz_step"], alert["source_edge"]) == (
        shipped["eventID"],
        "shipping",
        None,
    )
    assert [(x["lot_code"], x["hold_id"]) for x in alert["lots"]] == [
        (p.lot("CAKE"), hold["hold_id"])
    ]
    record = await get(collector, f"/api/v1/holds/{hold['hold_id']}")
    assert record.status_code == 200, record.text
    assert [a["event_id"] for a in record.json()["alerts"]] == [shipped["eventID"]]
    assert record.json()["hold"]["reason"] == "allergen label"
    # The event carries the flag, as one an edge flagged at its door.
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        cur = await conn.execute(
            "select event_id, flags from trace_events where event_id = any(%s)", (list(ids),)
        )
        flags = dict(await cur.fetchall())
    assert flags == {
        shipped["eventID"]: ["held_lot"],
        received["eventID"]: [],
        other["eventID"]: [],
    }

    missing = await get(collector, "/api/v1/holds/999999999999")
    assert missing.status_code == 404 and "GET /api/v1/holds" in missing.text


def _next(answer: httpx.Response) -> str | None:
    """The path and query of the Link header's rel="next", None on the last page."""
    link = answer.headers.get("link")
    if link is None:
        return None
    url = httpx.URL(link.split(";")[0].strip("<>"))
    return f"{url.path}?{url.query.decode()}"


async def test_a_hold_of_everything_downstream_is_listed_by_pages(
    services: Services, collector: RunningCollector
) -> None:
    """A lot that made 25 others, one of them held on its own: the answers list a page and
    count the rest; GET /holds/{id}/lots pages through them with the Link header."""
    p = Plant(services)
    made = [p.lot(f"P{i:02d}") for i in range(25)]
    await p.post(
        p.batch(
            f"B-{p.tag}",
            [lot_item(FLOUR_GTIN, p.lot("ROOT"), 100, "KGM")],
            [lot_item(BREAD_GTIN, code, 1, "EA") for code in made],
        )
    )
    apart = lot_path(BREAD_GTIN, made[7])
    assert (await post(collector, f"{apart}/hold", {"reason": "its own"})).status_code == 201
    root = lot_path(FLOUR_GTIN, p.lot("ROOT"))
    async with collector.client(Role.quality) as api:
        held = await api.post(f"{root}/hold?limit=10", json={"reason": "mould", "downstream": True})
    assert held.status_code == 201, held.text
    body = held.json()
    assert (len(body["downstream"]), body["downstream_total"]) == (10, 24)
    assert [(h["lot_code"], body["already_held_total"]) for h in body["already_held"]] == [
        (made[7], 1)
    ]
    hold_id = body["hold"]["hold_id"]
    assert (await get(collector, f"/api/v1/holds/{hold_id}")).json()["held_with"] == 24

    pages: list[list[str]] = []
    path: str | None = f"/api/v1/holds/{hold_id}/lots?limit=10"
    while path is not None:
        answer = await get(collector, path)
        assert answer.status_code == 200, answer.text
        pages.append([h["lot_code"] for h in answer.json()])
        path = _next(answer)
    assert [len(page) for page in pages] == [10, 10, 4]
    listed = [code for page in pages for code in page]
    assert sorted(listed) == sorted(code for code in made if code != made[7])
    assert pages[0] == [h["lot_code"] for h in body["downstream"]]

    async with collector.client(Role.quality) as api:
        freed = await api.post(f"{root}/release?limit=5", json={"reason": "ok", "downstream": True})
    assert freed.status_code == 200, freed.text
    assert (len(freed.json()["released"]), freed.json()["released_total"]) == (6, 25)
    [apart_hold] = (await get(collector, f"{apart}/holds")).json()
    assert apart_hold["in_force"]

    # The list of holds pages the same way, newest first, with nothing seen twice.
    first = await get(collector, "/api/v1/holds", state="all", limit="2")
    second = await get(collector, _next(first) or "")
    seen = [h["hold_id"] for h in first.json() + second.json()]
    assert len(seen) == 4 and seen == sorted(set(seen), reverse=True)
    bad = await get(collector, "/api/v1/holds", cursor="-1")
    assert bad.status_code == 422
