"""Trace queries on hand-built genealogies with known answers, checked through the HTTP API.

The plant is the bakery of tests/cloud_collector/plant.py (its picture is there).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import httpx
import psycopg

from cloud_collector import trace
from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from protocols import gs1
from protocols.mqtt import topics
from tests.cloud_collector.plant import (
    BREAD_GTIN,
    CAKE_GTIN,
    DOUGH_GTIN,
    FLOUR_GTIN,
    SUGAR_GTIN,
    T0,
    Plant,
    erp,
    lot_item,
)
from tests.conftest import RunningCollector, Services


async def get(collector: RunningCollector, path: str, **params: str) -> httpx.Response:
    async with collector.client(Role.reader) as api:
        return await api.get(path, params=params)


def codes(body: dict) -> list[str]:
    return sorted(x["lot_code"] for x in body["lots"])


async def test_backward_walks_to_the_supplier_lots(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    await erp(collector, p)
    r = await get(collector, f"/api/v1/lots/01/{CAKE_GTIN}/10/{p.lot('CAKE')}/trace/backward")
    assert r.status_code == 200, r.text
    body = r.json()
    assert codes(body) == sorted(p.lot(n) for n in ("CAKE", "DOUGH", "FLOUR", "SUGAR"))
    assert sorted(b["batch"]["batch_id"] for b in body["batches"]) == [f"B1-{p.tag}", f"B3-{p.tag}"]
    assert all(b["operators"] == ["OP-7"] for b in body["batches"])
    assert sorted((r["document"], r["supplier"], r["quantity"]) for r in body["receipts"]) == [
        (f"PO-{p.tag}", "Mill Ltd", 200.0),
        (f"PO-{p.tag}", "Mill Ltd", 1000.0),
    ]
    b1 = next(b for b in body["batches"] if b["batch"]["batch_id"] == f"B1-{p.tag}")
    assert [(q["check_name"], q["passed"]) for q in b1["qc"]] == [("dough pH", True)]
    spreadsheet = await get(
        collector, f"/api/v1/lots/01/{CAKE_GTIN}/10/{p.lot('CAKE')}/trace/backward", format="csv"
    )
    assert sorted(r["lot_code"] for r in csv.DictReader(io.StringIO(spreadsheet.text))) == codes(
        body
    )
    # The supplier's own lot code finds our lot.
    by_supplier_code = await get(collector, f"/api/v1/lots/M-{p.tag}/trace/forward")
    assert by_supplier_code.json()["lot"]["lot_code"] == p.lot("FLOUR")
    # SUGAR reaches CAKE twice; it is one lot in the answer, linked twice.
    sugar = next(x["lot_id"] for x in body["lots"] if x["lot_code"] == p.lot("SUGAR"))
    assert sum(1 for link in body["links"] if link["input_lot"] == sugar) == 2
    assert f"batch B3-{p.tag} has no readings" in body["gaps"]
    assert not any("no recorded origin" in g for g in body["gaps"])


async def test_forward_reaches_every_descendant_shipment_and_customer(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    await erp(collector, p)
    r = await get(collector, f"/api/v1/lots/(01){SUGAR_GTIN}(10){p.lot('SUGAR')}/trace/forward")
    body = r.json()
    assert codes(body) == sorted(p.lot(n) for n in ("SUGAR", "DOUGH", "BREAD", "CAKE"))
    shipped = sorted(
        (s["shipment"], s["customer"], s["order_id"], s["quantity"]) for s in body["shipments"]
    )
    assert shipped == [
        (f"SH-1-{p.tag}", "Bakery Co", f"SO-1-{p.tag}", 600.0),
        (f"SH-2-{p.tag}", None, None, 100.0),
    ]
    # B1 took 500 kg flour + 100 kg sugar for 600 kg dough: balanced, though the trace of
    # the sugar alone sees only its 100 kg going in.
    assert not any("do not balance" in g for g in body["gaps"]), body["gaps"]
    customers = {c["customer"]: c for c in body["customers"]}
    assert customers["Bakery Co"]["orders"] == [f"SO-1-{p.tag}"]


async def test_recall_lists_shipped_and_on_hand_stock_also_as_csv(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    await erp(collector, p)
    flour = f"urn:epc:class:lgtin:9506000.013435.{p.lot('FLOUR')}"  # GS1 class URI form
    body = (await get(collector, f"/api/v1/lots/{flour}/recall")).json()
    assert body["affected_lots"] == 4
    lines = sorted(
        (x["lot_code"], x["status"], x["quantity"], x["customer"]) for x in body["lines"]
    )
    assert (p.lot("BREAD"), "shipped", 600.0, "Bakery Co") in lines
    assert (p.lot("CAKE"), "shipped", 100.0, None) in lines
    assert (p.lot("CAKE"), "on_hand", 300.0, None) in lines  # 400 made, 100 shipped
    [cake_left] = [x for x in body["lines"] if x["status"] == "on_hand" and "CAKE" in x["lot_code"]]
    # Made at line-1 (400); the shipment took its 100 from there: 300 lie at line-1.
    assert cake_left["location"] == "line-1"
    # The recall states the gaps its forward trace meets, and the same customers.
    forward = (await get(collector, f"/api/v1/lots/{flour}/trace/forward")).json()
    assert body["gaps"] == [f"batch B{n}-{p.tag} has no readings" for n in (1, 2, 3)]
    assert body["gaps"] == forward["gaps"]
    assert sorted(map(str, body["customers"])) == sorted(map(str, forward["customers"]))
    r = await get(collector, f"/api/v1/lots/{flour}/recall", format="csv")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    # The streamed spreadsheet says what the JSON answer says, line for line.
    assert sorted(
        (row["lot_code"], row["status"], float(row["quantity"] or -1), row["customer"])
        for row in rows
    ) == sorted(
        (x["lot_code"], x["status"], float(x["quantity"] or -1), x["customer"] or "")
        for x in body["lines"]
    )


async def test_a_rework_loop_terminates_and_is_reported(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery  # bread is reworked into dough: DOUGH -> BREAD -> DOUGH
    await p.post(
        p.batch(
            f"RW-{p.tag}",
            [lot_item(BREAD_GTIN, p.lot("BREAD"), 10, "EA")],
            [lot_item(DOUGH_GTIN, p.lot("DOUGH"))],
        )
    )
    body = (
        await get(collector, f"/api/v1/lots/01/{DOUGH_GTIN}/10/{p.lot('DOUGH')}/trace/forward")
    ).json()
    assert codes(body) == sorted(p.lot(n) for n in ("DOUGH", "BREAD", "CAKE"))
    assert any("reach one another" in g and p.lot("BREAD") in g for g in body["gaps"])


async def test_gaps_no_origin_and_unbalanced_batch(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)
    await p.post(
        p.batch(
            f"BX-{p.tag}",
            [lot_item(FLOUR_GTIN, p.lot("MYSTERY"), 100, "KGM")],
            [lot_item(DOUGH_GTIN, p.lot("OUT"), 150, "KGM")],
        )
    )
    body = (
        await get(collector, f"/api/v1/lots/01/{DOUGH_GTIN}/10/{p.lot('OUT')}/trace/backward")
    ).json()
    gaps = body["gaps"]
    assert any(f"lot {p.lot('MYSTERY')}" in g and "no recorded origin" in g for g in gaps)
    assert f"batch BX-{p.tag}: inputs 100 KGM and outputs 150 KGM do not balance within 5%" in gaps


async def test_a_lot_shipped_but_never_made_or_received_is_a_gap_of_its_recall(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)
    ghost = p.lot("GHOST")
    await p.post(p.shipment([lot_item(BREAD_GTIN, ghost, 10, "EA")], f"SH-{p.tag}"))
    body = (await get(collector, f"/api/v1/lots/01/{BREAD_GTIN}/10/{ghost}/recall")).json()
    assert body["gaps"] == [
        f"lot {ghost} (GTIN {BREAD_GTIN}, id {body['lot']['lot_id']}) was shipped but never "
        "produced or received"
    ]
    # What made it is unknown, so what is left is too: its label's 10 is not its quantity.
    assert [(x["status"], x["shipment"], x["quantity"]) for x in body["lines"]] == [
        ("shipped", f"SH-{p.tag}", 10.0),
        ("unknown", None, None),
    ]


async def test_lot_forms_unknown_and_ambiguous(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)
    await p.post(
        p.receipt([lot_item(FLOUR_GTIN, p.lot("L")), lot_item(SUGAR_GTIN, p.lot("L"))], "PO-X")
    )
    ambiguous = await get(collector, f"/api/v1/lots/{p.lot('L')}/trace/backward")
    assert ambiguous.status_code == 409
    assert len(ambiguous.json()["detail"]["candidates"]) == 2
    unknown = await get(collector, "/api/v1/lots/NO-SUCH-LOT/trace/backward")
    assert (
        unknown.status_code == 404
        and "no lot is known as 'NO-SUCH-LOT'" in unknown.json()["detail"]
    )
    one = await get(
        collector, f"/api/v1/lots/https://id.gs1.org/01/{SUGAR_GTIN}/10/{p.lot('L')}/trace/backward"
    )
    assert one.status_code == 200 and one.json()["lot"]["gtin"] == SUGAR_GTIN
    by_id = await get(collector, f"/api/v1/lots/{one.json()['lot']['lot_id']}/trace/forward")
    assert by_id.json()["lot"]["lot_code"] == p.lot("L")


async def test_recall_by_condition_follows_the_batches_that_ran_too_hot(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    oven = f"oven-{p.tag}"
    await p.readings(
        oven, "temperature", [("B1", 180.0), ("B1", 231.5), ("B3", 185.0), (None, 240.0)]
    )
    condition = {
        "tag": "temperature",
        "device": oven,
        "condition": "above",
        "limit": 220,
        "from": (T0 - timedelta(hours=1)).isoformat(),
        "to": (T0 + timedelta(hours=1)).isoformat(),
    }
    async with collector.client(Role.reader) as api:
        body = (await api.post("/api/v1/recall/by-condition", json=condition)).json()
        bad = await api.post("/api/v1/recall/by-condition", json={**condition, "limit": None})
    assert [(b["batch_id"], b["readings"], b["worst"]) for b in body["batches"]] == [
        (f"B1-{p.tag}", 1, 231.5)
    ]
    assert codes(body) == sorted(p.lot(n) for n in ("DOUGH", "BREAD", "CAKE"))
    assert sorted(s["shipment"] for s in body["shipments"]) == [f"SH-1-{p.tag}", f"SH-2-{p.tag}"]
    assert "1 readings met the condition while no batch ran" in body["gaps"]
    assert bad.status_code == 422 and "needs a limit" in bad.text


async def test_a_pallet_received_by_its_tag_gets_its_lot_when_its_label_is_scanned(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)
    sscc = gs1.with_check_digit("1" + "0614141" + p.tag[:4].encode().hex()[:8].zfill(9)[:9])
    tag_read = {"epc": f"urn:epc:id:sscc:0614141.{sscc[0]}{sscc[8:17]}", "sscc": sscc}
    label = lot_item(FLOUR_GTIN, p.lot("FLOUR")) | {
        "sscc": sscc,
        "epc": f"https://id.gs1.org/00/{sscc}",
    }
    await p.post(
        p.receipt([tag_read], f"PO-{p.tag}"),  # at the gate: only the pallet is known
        p.batch(f"B-{p.tag}", [label], [lot_item(BREAD_GTIN, p.lot("BREAD"), 10, "EA")]),
    )
    body = (
        await get(collector, f"/api/v1/lots/01/{BREAD_GTIN}/10/{p.lot('BREAD')}/trace/backward")
    ).json()
    assert [(r["document"], r["epc"]) for r in body["receipts"]] == [
        (f"PO-{p.tag}", f"sscc:{sscc}")
    ]
    assert not any("no recorded origin" in g for g in body["gaps"])
    # The pallet in each of its forms: EPC URN, Digital Link (with or without its host),
    # element string, bare SSCC.
    for form in (tag_read["epc"], label["epc"], f"00/{sscc}", f"(00){sscc}", sscc):
        by_unit = await get(collector, f"/api/v1/lots/{form}/trace/forward")
        assert by_unit.json()["lot"]["lot_code"] == p.lot("FLOUR"), form


async def test_a_batch_whose_readings_never_all_arrived_is_a_gap(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)
    batch = f"BG-{p.tag}"
    await p.post({"kind": "batch_started", "line": "line-1", "batch": batch, "by": "op"})
    await p.post(p.batch(batch, [], [lot_item(BREAD_GTIN, p.lot("OUT"), 5, "EA")]))
    reading = {
        "kind": "reading",
        "line": "line-1",
        "batch": batch,
        "device": "oven",
        "tag": "t",
        "value": 1.0,
    }
    for seqs in ([0, 1], [5, 6]):  # 2..4 never arrive
        records = [
            reading | {"seq": n, "time": (T0 + timedelta(seconds=n)).isoformat()} for n in seqs
        ]
        payload = json.dumps(
            {"edge_id": p.edge, "stream": "readings", "epoch": "e", "records": records}
        ).encode()
        async with await psycopg.AsyncConnection.connect(p.url, autocommit=True) as conn:
            await ingest(conn, topics.data(p.edge, "readings"), payload)
    body = (
        await get(collector, f"/api/v1/lots/01/{BREAD_GTIN}/10/{p.lot('OUT')}/trace/backward")
    ).json()
    expected = f"batch {batch}: readings 2..4 of edge {p.edge} never arrived"
    assert f"{expected}: the batch's record is incomplete" in body["gaps"]
    assert f"batch {batch} recorded no inputs" not in body["gaps"]  # no flag was sent


async def test_a_recall_inside_a_callers_transaction_leaves_nothing_behind(
    bakery: Plant, services: Services
) -> None:
    """Twice in one transaction (its temporary table and memory setting are the recall's
    own), and the transaction's settings as they were."""
    p = bakery
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        lot = await trace.resolve(conn, f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}")
        first = await trace.recall(conn, lot)
        second = await trace.recall(conn, lot)
        assert first == second and first.affected_lots == 4
        cur = await conn.execute("select current_setting('work_mem'), to_regclass('reached')")
        assert await cur.fetchone() == ("4MB", None)


async def test_what_is_left_of_a_lot_counts_each_shipment_once(
    services: Services, collector: RunningCollector
) -> None:
    """Two shipments of one lot, the first sent twice by the edge (its resend after a lost
    ack): 100 received, 30 + 20 shipped, 50 left where it was received (the shipments took
    theirs from there)."""
    p = Plant(services)
    salt = p.lot("SALT")
    await p.post(p.receipt([lot_item(SUGAR_GTIN, salt, 100, "KGM")], f"PO-{p.tag}"))
    first_seq = p.seq
    first = p.shipment([lot_item(SUGAR_GTIN, salt, 30, "KGM")], f"SH-A-{p.tag}")
    await p.post(first)
    p.seq = first_seq
    await p.post(first)  # the same record, same sequence number: a resend
    await p.post(p.shipment([lot_item(SUGAR_GTIN, salt, 20, "KGM")], f"SH-B-{p.tag}"))
    body = (await get(collector, f"/api/v1/lots/01/{SUGAR_GTIN}/10/{salt}/recall")).json()
    lines = sorted(
        (x["status"], x["shipment"], x["quantity"], x["location"]) for x in body["lines"]
    )
    assert lines == [
        ("on_hand", None, 50.0, "dock-1"),
        ("shipped", f"SH-A-{p.tag}", 30.0, "dock-2"),
        ("shipped", f"SH-B-{p.tag}", 20.0, "dock-2"),
    ]
