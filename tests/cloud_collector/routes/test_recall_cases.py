"""Recall cases through the HTTP API, on the bakery of tests/cloud_collector/test_trace.py:

    supplier FLOUR + SUGAR --B1--> DOUGH --B2--> BREAD (600, all on SH-1 to Bakery Co)
                                        \\--B3--> CAKE (400: 100 on SH-2, 300 left at line-1)

A case opened from FLOUR freezes that set; events that arrive later join it, with when."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import psycopg
from openpyxl import load_workbook

from cloud_collector import recall_cases
from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from protocols.mqtt import topics
from tests.cloud_collector.plant import (
    BREAD_GTIN,
    CAKE_GTIN,
    FLOUR_GTIN,
    T0,
    Plant,
    erp,
    lot_item,
)
from tests.conftest import RunningCollector

TART_GTIN = "09506000134406"
NOW = datetime.now(UTC).isoformat()


async def _open(collector: RunningCollector, body: dict) -> dict:
    async with collector.client(Role.quality) as api:
        r = await api.post("/api/v1/recall-cases", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _keys(record: dict, kind: str, members: str = "members") -> set[str]:
    return {m["key"] for m in record[members] if m["kind"] == kind}


async def test_a_case_freezes_the_recall_and_late_events_join_it_with_when(
    bakery: Plant,
    collector: RunningCollector,
) -> None:
    p = bakery
    await erp(collector, p)
    flour = f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}"
    opened = await _open(collector, {"title": "flour complaint", "lot": flour})
    case = opened["case"]
    assert (case["state"], case["origin"], case["lot_code"], case["drill"]) == (
        "open",
        "lot",
        p.lot("FLOUR"),
        False,
    )
    lot_ids = {m["lot_code"]: m["lot_id"] for m in opened["members"] if m["kind"] == "lot"}
    assert sorted(lot_ids) == sorted(p.lot(n) for n in ("FLOUR", "DOUGH", "BREAD", "CAKE"))
    assert _keys(opened, "customer") == {f"C1-{p.tag}", f"shipment SH-2-{p.tag}"}
    places = {
        (m["lot_code"], m["place"], m["quantity"], m["uom"]): m
        for m in opened["members"]
        if m["kind"] == "place"
    }
    assert sorted(places) == [
        (p.lot("CAKE"), "line-1", 300, "EA"),  # 400 made there, 100 shipped
        (p.lot("FLOUR"), "dock-1", 500, "KGM"),  # 1000 received, 500 used
    ]
    cake_place = places[(p.lot("CAKE"), "line-1", 300, "EA")]
    assert opened["added_since_opening"] == [] and opened["no_longer_found"] == []
    assert [a["kind"] for a in opened["actions"]] == ["opened"]

    # Late events: 50 more cakes leave on SH-3, 10 more on SH-2, and a batch makes tarts
    # of 20 cakes.
    await p.post(
        p.shipment([lot_item(CAKE_GTIN, p.lot("CAKE"), 50, "EA")], f"SH-3-{p.tag}"),
        p.shipment([lot_item(CAKE_GTIN, p.lot("CAKE"), 10, "EA")], f"SH-2-{p.tag}"),
        p.batch(
            f"B4-{p.tag}",
            [lot_item(CAKE_GTIN, p.lot("CAKE"), 20, "EA")],
            [lot_item(TART_GTIN, p.lot("TART"), 40, "EA")],
        ),
    )
    path = f"/api/v1/recall-cases/{case['case_id']}"
    async with collector.client(Role.reader) as reader, collector.client(Role.quality) as api:
        before = await reader.get(path)  # as last recomputed: at the opening
        assert before.json()["added_since_opening"] == [], before.text
        refused = await reader.post(f"{path}/refresh")
        assert refused.status_code == 403, refused.text
        r = await api.post(f"{path}/refresh")
        again = await api.post(f"{path}/refresh")
        assert (await reader.get(path)).json() == again.json()
    assert r.status_code == 200, r.text
    now = r.json()
    added = {(m["kind"], m["key"]) for m in now["added_since_opening"]}
    tart = next(m for m in now["members"] if m["kind"] == "lot" and m["lot_code"] == p.lot("TART"))
    assert added == {
        ("lot", str(tart["lot_id"])),
        ("customer", f"shipment SH-3-{p.tag}"),
        ("shipment", f"SH-3-{p.tag}|{lot_ids[p.lot('CAKE')]}|"),
        ("place", f"line-1|{tart['lot_id']}"),  # the tarts: at the line that made them
    }
    assert all(
        m["found_at"] > case["opened_at"] and not m["at_opening"]
        for m in now["added_since_opening"]
    )
    # What the case started from is all still there; the cakes' stock is what is left now.
    assert _keys(opened, "lot") | {str(tart["lot_id"])} == _keys(now, "lot")
    [cake] = [m for m in now["members"] if m["key"] == cake_place["key"]]
    assert (cake["quantity"], cake["current_quantity"], cake["at_opening"]) == (300, 220, True)
    [sh2] = [m for m in now["members"] if m["kind"] == "shipment" and "SH-2" in m["key"]]
    assert (sh2["quantity"], sh2["current_quantity"]) == (100, 110)
    refreshed = [a for a in now["actions"] if a["kind"] == "refreshed"]
    assert len(refreshed) == 1 and refreshed[0]["detail"]["added"] == {
        "lot": 1,
        "customer": 1,
        "shipment": 1,
        "place": 1,
    }
    # A recomputation that finds nothing new records nothing.
    assert [a["kind"] for a in again.json()["actions"]] == ["opened", "refreshed"]


async def test_notices_returns_places_holds_and_closing_are_recorded_with_who_and_when(
    bakery: Plant,
    collector: RunningCollector,
) -> None:
    p = bakery
    await erp(collector, p)
    opened = await _open(
        collector, {"title": "bread recall", "lot": f"01/{BREAD_GTIN}/10/{p.lot('BREAD')}"}
    )
    path = f"/api/v1/recall-cases/{opened['case']['case_id']}"
    customer = f"C1-{p.tag}"
    told = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    async with collector.client(Role.quality) as quality, collector.client(Role.reader) as reader:
        refused = await reader.post(
            f"{path}/notices",
            json={"customer": customer, "notified_at": NOW, "notified_by": "x", "method": "phone"},
        )
        assert refused.status_code == 403, refused.text
        stranger = await quality.post(
            f"{path}/notices",
            json={"customer": "ACME", "notified_at": NOW, "notified_by": "x", "method": "phone"},
        )
        assert stranger.status_code == 422 and customer in stranger.text, stranger.text
        r = await quality.post(
            f"{path}/notices",
            json={
                "customer": customer,
                "notified_at": told,
                "notified_by": "Q. Manager",
                "method": "phone",
                "contact": "store manager",
            },
        )
        assert r.status_code == 201, r.text
        r = await quality.post(
            f"{path}/returns",
            json={
                "customer": customer,
                "quantity": 550,
                "uom": "EA",
                "lot": f"01/{BREAD_GTIN}/10/{p.lot('BREAD')}",
                "received_at": NOW,
            },
        )
        assert r.status_code == 201, r.text
        not_ours = await quality.post(
            f"{path}/returns",
            json={
                "customer": customer,
                "quantity": 1,
                "uom": "EA",
                "lot": f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}",
                "received_at": NOW,
            },
        )
        assert not_ours.status_code == 422 and "no lot" in not_ours.text, not_ours.text
        # The bread is all shipped: the case has no place, and says so.
        nowhere = await quality.post(
            f"{path}/places",
            json={
                "place": "dock-2",
                "action": "destroyed",
                "quantity": 1,
                "uom": "EA",
                "happened_at": NOW,
            },
        )
        assert nowhere.status_code == 422 and "no places" in nowhere.text, nowhere.text
        held = await quality.post(f"{path}/hold", json={"reason": "bread recall"})
        assert held.status_code == 200, held.text
        assert len(held.json()["held"]) == 1
        holds = (await reader.get("/api/v1/holds")).json()
        mine = [h for h in holds if h["lot_code"] == p.lot("BREAD")]
        assert mine and mine[0]["reason"].startswith("recall case ")
        closed = await quality.post(f"{path}/close", json={"summary": "  550 of 600 back  "})
        assert closed.status_code == 200, closed.text
        late = await quality.post(
            f"{path}/notices",
            json={"customer": customer, "notified_at": NOW, "notified_by": "x", "method": "email"},
        )
        assert late.status_code == 409 and "closed" in late.text
        again = await quality.post(f"{path}/close", json={"summary": "again"})
        assert again.status_code == 409
        missing = await reader.get("/api/v1/recall-cases/999999999")
        assert missing.status_code == 404
        record = (await reader.get(path)).json()
    case = record["case"]
    assert (case["state"], case["summary"]) == ("closed", "550 of 600 back")
    [c] = record["customers"]
    assert (c["customer"], c["shipped"], c["returned"], c["notified"]) == (
        "Bakery Co",
        {"EA": 600},
        {"EA": 550},
        True,
    )
    assert datetime.fromisoformat(c["last_notified_at"]) == datetime.fromisoformat(told)
    kinds = [(a["kind"], a["by"]) for a in record["actions"]]
    who = kinds[0][1]
    assert kinds == [
        ("opened", who),
        ("notified", who),
        ("returned", who),
        ("lots_held", who),
        ("closed", who),
    ]
    assert "quality" in who
    notice = record["actions"][1]
    assert (notice["method"], notice["contact"], notice["detail"]) == (
        "phone",
        "store manager",
        {"notified_by": "Q. Manager"},
    )


async def test_a_drill_reports_the_time_from_opening_to_a_complete_fsma_204_export(
    bakery: Plant,
    collector: RunningCollector,
) -> None:
    p = bakery
    opened = await _open(
        collector,
        {"title": "Q4 mock recall", "lot": f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}", "drill": True},
    )
    case_id = opened["case"]["case_id"]
    assert opened["case"]["drill"] and opened["case"]["time_to_export_s"] is None
    async with collector.client(Role.reader) as api:
        r = await api.get(
            f"/api/v1/recall-cases/{case_id}/export",
            params={"format": "xlsx", "tz": "America/Chicago"},
        )
        assert r.status_code == 200, r.text
        workbook = load_workbook(io.BytesIO(r.content), read_only=True)
        assert workbook.sheetnames[:6] == [
            "Case",
            "Customers",
            "Places",
            "Members",
            "Actions",
            "FSMA 204",
        ]
        fsma = list(workbook["FSMA 204"].iter_rows(values_only=True))
        tlc = fsma[0].index("Traceability Lot Code")
        assert {row[tlc] for row in fsma[1:]} >= {p.lot(n) for n in ("FLOUR", "BREAD", "CAKE")}
        as_json = await api.get(f"/api/v1/recall-cases/{case_id}/export")
        assert as_json.status_code == 200, as_json.text
        body = json.loads(as_json.content)
        assert len(body["fsma204_rows"]) == len(fsma) - 1
        assert body["record"]["case"]["case_id"] == case_id
        drills = (await api.get("/api/v1/recall-cases/drills")).json()
        real = (await api.get("/api/v1/recall-cases", params={"drill": "false"})).json()
    [drill] = [d for d in drills if d["case_id"] == case_id]
    assert case_id not in {c["case_id"] for c in real}
    # Measured to the first complete export, which the record keeps.
    first = datetime.fromisoformat(drill["first_export_at"])
    assert (
        drill["time_to_export_s"]
        == (first - datetime.fromisoformat(drill["opened_at"])).total_seconds()
    )
    assert drill["time_to_export_s"] > 0 and drill["within_24h"] is True
    exports = [a for a in body["record"]["actions"] if a["kind"] == "exported"]
    assert exports[0]["detail"]["format"] == "xlsx"
    assert exports[0]["detail"]["fsma204_rows"] == len(fsma) - 1


async def test_a_case_opens_from_a_condition_as_the_recall_by_condition_takes_it(
    bakery: Plant,
    collector: RunningCollector,
) -> None:
    p = bakery
    oven = f"oven-{p.tag}"
    readings = [
        {
            "kind": "reading",
            "seq": i,
            "time": (T0 + timedelta(minutes=i)).isoformat(),
            "line": "line-1",
            "batch": f"B2-{p.tag}",
            "device": oven,
            "tag": "temperature",
            "value": value,
            "unit": "Cel",
        }
        for i, value in enumerate([180.0, 236.0])
    ]
    payload = json.dumps(
        {"edge_id": p.edge, "stream": "readings", "epoch": "e", "records": readings}
    ).encode()
    async with await psycopg.AsyncConnection.connect(p.url, autocommit=True) as conn:
        assert (await ingest(conn, topics.data(p.edge, "readings"), payload)).inserted == 2
    condition = {
        "tag": "temperature",
        "device": oven,
        "condition": "above",
        "limit": 220,
        "from": (T0 - timedelta(hours=1)).isoformat(),
        "to": (T0 + timedelta(hours=1)).isoformat(),
    }
    opened = await _open(collector, {"title": "oven too hot", "condition": condition})
    assert opened["case"]["origin"] == "condition"
    assert opened["case"]["condition"]["limit"] == 220
    assert {m["lot_code"] for m in opened["members"] if m["kind"] == "lot"} == {p.lot("BREAD")}
    assert {m["key"] for m in opened["members"] if m["kind"] == "shipment"} == {
        f"SH-1-{p.tag}|{next(m['lot_id'] for m in opened['members'] if m['kind'] == 'lot')}|"
    }
    async with collector.client(Role.quality) as api:
        naive = await api.post(
            "/api/v1/recall-cases",
            json={"title": "x", "condition": {**condition, "from": "2026-11-20T05:00:00"}},
        )
        both = await api.post(
            "/api/v1/recall-cases",
            json={"title": "x", "condition": condition, "lot": p.lot("BREAD")},
        )
        long = await api.post(
            "/api/v1/recall-cases",
            json={
                "title": "x",
                "condition": {**condition, "from": (T0 - timedelta(days=400)).isoformat()},
            },
        )
    assert naive.status_code == 422, naive.text
    assert both.status_code == 422 and "either" in both.text, both.text
    assert long.status_code == 422 and "TRACE_CONDITION_MAX_DAYS" in long.text, long.text


async def test_the_collector_keeps_open_cases_current_between_reads_and_leaves_closed_ones(
    bakery: Plant,
    collector: RunningCollector,
) -> None:
    p = bakery
    flour = f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}"
    kept = (await _open(collector, {"title": "open", "lot": flour}))["case"]["case_id"]
    done = (await _open(collector, {"title": "closed", "lot": flour}))["case"]["case_id"]
    async with collector.client(Role.quality) as api:
        r = await api.post(f"/api/v1/recall-cases/{done}/close", json={"summary": "over"})
        assert r.status_code == 200, r.text
    await p.post(p.shipment([lot_item(CAKE_GTIN, p.lot("CAKE"), 5, "EA")], f"SH-9-{p.tag}"))
    customer = f"shipment SH-9-{p.tag}"
    found = "select case_id from recall_case_members where kind = 'customer' and key = %s"
    async with (
        await psycopg.AsyncConnection.connect(p.url, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(p.url, autocommit=True) as other,
    ):
        # Another collector's round in progress: this one skips its own.
        await other.execute("select pg_advisory_lock(hashtext('recall_cases.keep_current'))")
        assert await recall_cases.refresh_open_cases(conn) == 0
        await other.execute("select pg_advisory_unlock(hashtext('recall_cases.keep_current'))")
        assert await (await conn.execute(found, (customer,))).fetchall() == []
        assert await recall_cases.refresh_open_cases(conn) >= 1
        assert await (await conn.execute(found, (customer,))).fetchall() == [(kept,)]
    async with collector.client(Role.quality) as api:
        closed = (await api.post(f"/api/v1/recall-cases/{done}/refresh")).json()
    assert closed["added_since_opening"] == []
