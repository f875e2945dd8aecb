"""The recall by process condition as the API answers it and hands it out: the JSON with the
recall list, stock on hand by place and customers; the recall list as CSV (the lot recall's
columns and rows) and XLSX; the FSMA 204 spreadsheet of its lots; each refusal of a bad
condition a 4xx that names the field; the lot recall's roles.

The plant is the bakery of tests/cloud_collector/plant.py: B1 (which made the dough) ran
too hot, so the condition reaches the dough, the bread (shipped on SH-1 to Bakery Co) and
the cake (100 shipped on SH-2, 300 on hand)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from openpyxl import load_workbook

from cloud_collector import auth, trace
from cloud_collector.auth import Role
from tests.cloud_collector.plant import T0, Plant, erp
from tests.conftest import RunningCollector

HOT_LIMIT = 220.0


async def too_hot(p: Plant) -> dict[str, Any]:
    """B1's oven ran above the limit once (B3's never did; one hot reading had no batch):
    the condition, as the query of the GET routes."""
    oven = f"oven-{p.tag}"
    await p.readings(
        oven, "temperature", [("B1", 180.0), ("B1", 231.5), ("B3", 185.0), (None, 240.0)]
    )
    return {
        "tag": "temperature",
        "device": oven,
        "condition": "above",
        "limit": HOT_LIMIT,
        "from": (T0 - timedelta(hours=1)).isoformat(),
        "to": (T0 + timedelta(hours=1)).isoformat(),
    }


def rows(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(answer.text)))


def sheet(answer: httpx.Response, name: str) -> list[tuple[Any, ...]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/vnd.openxmlformats")
    book = load_workbook(io.BytesIO(answer.content), read_only=True)
    return [tuple(r) for r in book[name].iter_rows(values_only=True)]


async def test_the_answer_carries_the_recall_list_stock_by_place_and_customers(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    await erp(collector, p)
    condition = await too_hot(p)
    async with collector.client(Role.reader) as api:
        by_query = await api.get("/api/v1/recall/by-condition", params=condition)
        by_body = await api.post("/api/v1/recall/by-condition", json=condition)
        of_dough = await api.get(f"/api/v1/lots/{p.lot('DOUGH')}/recall")
    assert by_query.status_code == 200, by_query.text
    body = by_query.json()
    assert body == by_body.json()
    # The recall list of the lots B1 made is the dough's own recall list.
    assert body["lines"] == of_dough.json()["lines"]
    assert body["on_hand"] == of_dough.json()["on_hand"]
    assert [(s["quantity"], s["uom"], s["lots"], s["unknown"]) for s in body["on_hand"]] == [
        (300.0, "EA", 1, 0)  # the cake not shipped
    ]
    cake = next(x["lot_id"] for x in body["lots"] if x["lot_code"] == p.lot("CAKE"))
    bread = next(x["lot_id"] for x in body["lots"] if x["lot_code"] == p.lot("BREAD"))
    customers = sorted(
        (c["customer"], c["customer_id"], c["shipments"], c["orders"], c["lots"])
        for c in body["customers"]
        if c["customer"]
    ) + [(c["shipments"], c["lots"]) for c in body["customers"] if not c["customer"]]
    assert customers == [
        ("Bakery Co", f"C1-{p.tag}", [f"SH-1-{p.tag}"], [f"SO-1-{p.tag}"], {str(bread): 600.0}),
        ([f"SH-2-{p.tag}"], {str(cake): 100.0}),  # a shipment the ERP has not named
    ]
    assert "1 readings met the condition while no batch ran" in body["gaps"]


async def test_the_recall_list_downloads_as_the_lot_recall_s_csv_and_as_xlsx(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    await erp(collector, p)
    condition = await too_hot(p)
    async with collector.client(Role.reader) as api:
        as_csv = await api.get("/api/v1/recall/by-condition", params={**condition, "format": "csv"})
        as_xlsx = await api.get(
            "/api/v1/recall/by-condition", params={**condition, "format": "xlsx"}
        )
        of_dough = await api.get(f"/api/v1/lots/{p.lot('DOUGH')}/recall", params={"format": "csv"})
    lines = rows(as_csv)
    assert as_csv.text.splitlines()[0].split(",") == trace.RECALL_CSV_COLUMNS
    assert "attachment" in as_csv.headers["content-disposition"]
    assert sorted(lines, key=str) == sorted(rows(of_dough), key=str)
    assert sorted((r["lot_code"], r["status"], r["quantity"], r["uom"]) for r in lines) == [
        (p.lot("BREAD"), "shipped", "600", "EA"),
        (p.lot("CAKE"), "on_hand", "300", "EA"),
        (p.lot("CAKE"), "shipped", "100", "EA"),
    ]
    recall = sheet(as_xlsx, "Recall")
    assert list(recall[0]) == trace.RECALL_CSV_COLUMNS
    column = {name: i for i, name in enumerate(recall[0])}
    assert sorted(
        (r[column["lot_code"]], r[column["status"]], r[column["quantity"]]) for r in recall[1:]
    ) == [
        (p.lot("BREAD"), "shipped", 600),
        (p.lot("CAKE"), "on_hand", 300),
        (p.lot("CAKE"), "shipped", 100),
    ]
    assert [r[2:5] for r in sheet(as_xlsx, "On hand by place")[1:]] == [(300, 1, 0)]
    batches = sheet(as_xlsx, "Batches")
    assert [(r[0], r[2], r[5]) for r in batches[1:]] == [(f"B1-{p.tag}", 1, 231.5)]
    about = dict(r[:2] for r in sheet(as_xlsx, "About")[1:])
    assert f"tag temperature on device oven-{p.tag} above 220" in about["Request"]


async def test_the_fsma_204_spreadsheet_holds_the_affected_lots_events(
    bakery: Plant, collector: RunningCollector
) -> None:
    p = bakery
    condition = await too_hot(p)
    fsma = "/api/v1/fsma204/recall/by-condition"
    async with collector.client(Role.reader) as api:
        as_csv = await api.get(fsma, params={**condition, "tz": "Europe/Paris"})
        as_xlsx = await api.get(fsma, params={**condition, "format": "xlsx"})
        of_dough = await api.get(
            f"/api/v1/fsma204/lots/{p.lot('DOUGH')}/recall", params={"tz": "Europe/Paris"}
        )
    events = rows(as_csv)
    assert events == rows(of_dough)  # B1 made the dough only
    tlcs = {r["Traceability Lot Code"] for r in events}
    assert {p.lot("DOUGH"), p.lot("BREAD"), p.lot("CAKE")} <= tlcs
    assert p.lot("FLOUR") in tlcs  # the transformation that made the dough names its inputs
    assert len(sheet(as_xlsx, "FSMA 204")) == len(events) + 1
    about = dict(r[:2] for r in sheet(as_xlsx, "About")[1:])
    assert about["Request"].startswith("recall by condition (tag temperature")


async def test_no_batch_under_the_condition_gives_empty_downloads(
    bakery: Plant, collector: RunningCollector
) -> None:
    condition = {**await too_hot(bakery), "limit": 500}
    async with collector.client(Role.reader) as api:
        as_csv = await api.get("/api/v1/recall/by-condition", params={**condition, "format": "csv"})
        answer = await api.get("/api/v1/recall/by-condition", params=condition)
    assert rows(as_csv) == []
    assert "no batch ran while the condition held in that time range" in answer.json()["gaps"]


def _named(answer: httpx.Response) -> str:
    """What a 4xx says, flattened: the fields it names and its messages."""
    detail = answer.json()["detail"]
    if isinstance(detail, str):
        return detail
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in detail)


START = T0.isoformat()
GOOD = {"tag": "temperature", "condition": "above", "limit": "220", "from": START}
GOOD["to"] = (T0 + timedelta(hours=1)).isoformat()
BAD_QUERIES = [
    ({"tag": None}, "query.tag"),
    ({"tag": ""}, "query.tag"),
    ({"tag": "t" * 65}, "query.tag"),
    ({"tag": "a\x00b"}, "query.tag"),
    ({"device": "d" * 65}, "query.device"),
    ({"condition": "sideways"}, "query.condition"),
    ({"condition": None}, "query.condition"),
    ({"limit": None}, "needs a limit"),
    ({"limit": "nan"}, "query.limit"),
    ({"limit": "inf"}, "query.limit"),
    ({"limit": "hot"}, "query.limit"),
    ({"from": None}, "query.from"),
    ({"from": "2026-11-20T06:00:00"}, "query.from"),  # no UTC offset
    ({"to": "yesterday"}, "query.to"),
    ({"to": START}, "'to' must be after 'from'"),
    ({"to": (T0 + timedelta(days=45)).isoformat()}, "TRACE_CONDITION_MAX_DAYS"),
    ({"format": "pdf"}, "query.format"),
]


@pytest.mark.parametrize(
    "path", ["/api/v1/recall/by-condition", "/api/v1/fsma204/recall/by-condition"]
)
@pytest.mark.parametrize(("change", "named"), BAD_QUERIES)
async def test_a_bad_condition_is_a_422_that_names_the_field(
    collector: RunningCollector, path: str, change: dict[str, str | None], named: str
) -> None:
    query = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    async with collector.client(Role.reader) as api:
        answer = await api.get(path, params=query)
    assert answer.status_code == 422, answer.text
    assert named in _named(answer)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"limit": float("nan")}, "body.limit"),
        ({"colour": "red"}, "body.colour"),
        ({"tag": 7}, "body.tag"),
        ({"from": "2026-11-20T06:00:00"}, "body.from"),
    ],
)
async def test_a_bad_condition_body_is_a_422_that_names_the_field(
    collector: RunningCollector, change: dict[str, Any], named: str
) -> None:
    body = {**GOOD, "limit": 220.0, **change}
    async with collector.client(Role.reader) as api:
        # json.dumps writes NaN as a bare NaN, which Python's JSON reader takes: the model
        # must refuse it.
        answer = await api.post(
            "/api/v1/recall/by-condition",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == 422, answer.text
    assert named in _named(answer)


async def test_the_downloads_take_the_lot_recall_s_roles(
    bakery: Plant, collector: RunningCollector
) -> None:
    async with await psycopg.AsyncConnection.connect(bakery.url, autocommit=True) as conn:
        partner = f"DIST-{bakery.tag}"
        await auth.set_partner(conn, partner, [f"C1-{bakery.tag}"], ["0614141000012"])
        issued = await auth.issue(conn, f"dist-{uuid.uuid4().hex[:6]}", Role.partner, partner)
    asks = [
        ("/api/v1/recall/by-condition", {}),
        ("/api/v1/recall/by-condition", {"format": "csv"}),
        ("/api/v1/recall/by-condition", {"format": "xlsx"}),
        ("/api/v1/fsma204/recall/by-condition", {"format": "xlsx"}),
        (f"/api/v1/lots/{bakery.lot('DOUGH')}/recall", {}),
    ]
    seen: dict[str, list[int]] = {}
    for who, headers in [
        ("none", {}),
        ("partner", {"Authorization": f"Bearer {issued.key}"}),
        ("importer", collector.headers(Role.importer)),
        ("reader", collector.headers(Role.reader)),
    ]:
        async with httpx.AsyncClient(base_url=collector.api_url, headers=headers) as api:
            seen[who] = [
                (await api.get(path, params={**GOOD, **extra})).status_code for path, extra in asks
            ]
    assert seen == {
        "none": [401] * len(asks),
        "partner": [403] * len(asks),
        "importer": [403] * len(asks),
        "reader": [200] * len(asks),
    }
