"""Every loop among the lots of a trace's or a recall's set is a gap naming its lots, also
one the traced lot is not on; loops apart from each other are reported apart; a DAG (with
its diamonds) reports none."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import psycopg

from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from cloud_collector.trace.loops import cycles
from protocols.mqtt import topics
from tests.cloud_collector.plant import (  # noqa: F401 - the fixture is used by name
    BREAD_GTIN,
    DOUGH_GTIN,
    FLOUR_GTIN,
    T0,
    Plant,
    bakery,
    lot_item,
)
from tests.conftest import RunningCollector, Services


def _loop_gaps(body: dict) -> list[str]:
    return [g for g in body["gaps"] if "loop" in g]


async def _get(collector: RunningCollector, path: str) -> dict:
    async with collector.client(Role.reader) as http:
        answer = await http.get(path)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_loop_away_from_the_traced_lot_is_reported_with_its_lots(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)  # RAW -> WIP; WIP -> PRODUCT; PRODUCT reworked into WIP
    raw, wip, product = p.lot("RAW"), p.lot("WIP"), p.lot("PRODUCT")
    await p.post(
        p.batch(f"M1-{p.tag}", [lot_item(FLOUR_GTIN, raw, 10, "KGM")],
                [lot_item(DOUGH_GTIN, wip, 10, "KGM")]),
        p.batch(f"M2-{p.tag}", [lot_item(DOUGH_GTIN, wip, 10, "KGM")],
                [lot_item(BREAD_GTIN, product, 10, "KGM")]),
        p.batch(f"RW-{p.tag}", [lot_item(BREAD_GTIN, product, 2, "KGM")],
                [lot_item(DOUGH_GTIN, wip, 2, "KGM")]),
    )  # fmt: skip
    body = await _get(collector, f"/api/v1/lots/01/{FLOUR_GTIN}/10/{raw}/trace/forward")
    [gap] = _loop_gaps(body)
    assert "2 lots reach one another" in gap
    assert wip in gap and product in gap and raw not in gap
    backward = await _get(collector, f"/api/v1/lots/01/{BREAD_GTIN}/10/{product}/trace/backward")
    [gap] = _loop_gaps(backward)
    assert wip in gap and product in gap and raw not in gap


async def test_two_separate_loops_are_reported_separately(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)  # RAW feeds two lines, each with its own rework loop
    raw = p.lot("RAW")
    a1, a2, b1, b2 = (p.lot(n) for n in ("A1", "A2", "B1", "B2"))

    def step(name: str, made_of: str, gtin_in: str, makes: str, gtin_out: str) -> dict:
        return p.batch(f"{name}-{p.tag}", [lot_item(gtin_in, made_of, 1, "KGM")],
                       [lot_item(gtin_out, makes, 1, "KGM")])  # fmt: skip

    await p.post(
        step("A", raw, FLOUR_GTIN, a1, DOUGH_GTIN),
        step("AA", a1, DOUGH_GTIN, a2, BREAD_GTIN),
        step("ARW", a2, BREAD_GTIN, a1, DOUGH_GTIN),
        step("B", raw, FLOUR_GTIN, b1, DOUGH_GTIN),
        step("BB", b1, DOUGH_GTIN, b2, BREAD_GTIN),
        step("BRW", b2, BREAD_GTIN, b1, DOUGH_GTIN),
    )
    for path in ("trace/forward", "recall"):
        body = await _get(collector, f"/api/v1/lots/01/{FLOUR_GTIN}/10/{raw}/{path}")
        gaps = _loop_gaps(body)
        assert len(gaps) == 2, gaps
        [on_a] = [g for g in gaps if a1 in g]
        [on_b] = [g for g in gaps if b1 in g]
        assert a2 in on_a and b1 not in on_a and b2 not in on_a
        assert b2 in on_b and a1 not in on_b and a2 not in on_b


async def test_the_recall_by_condition_reports_the_loops_downstream(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)  # the hot batch made WIP, which is reworked with PRODUCT
    wip, product = p.lot("WIP"), p.lot("PRODUCT")
    await p.post(
        p.batch(f"HOT-{p.tag}", [lot_item(FLOUR_GTIN, p.lot("RAW"), 10, "KGM")],
                [lot_item(DOUGH_GTIN, wip, 10, "KGM")]),
        p.batch(f"M2-{p.tag}", [lot_item(DOUGH_GTIN, wip, 10, "KGM")],
                [lot_item(BREAD_GTIN, product, 10, "KGM")]),
        p.batch(f"RW-{p.tag}", [lot_item(BREAD_GTIN, product, 2, "KGM")],
                [lot_item(DOUGH_GTIN, wip, 2, "KGM")]),
    )  # fmt: skip
    oven = f"oven-{p.tag}"
    reading = {"kind": "reading", "seq": 0, "time": T0.isoformat(), "line": "line-1",
               "batch": f"HOT-{p.tag}", "device": oven, "tag": "temperature", "value": 250.0,
               "unit": "Cel"}  # fmt: skip
    payload = json.dumps(
        {"edge_id": p.edge, "stream": "readings", "epoch": "e", "records": [reading]}
    ).encode()
    async with await psycopg.AsyncConnection.connect(p.url, autocommit=True) as conn:
        assert (await ingest(conn, topics.data(p.edge, "readings"), payload)).inserted == 1
    condition = {"tag": "temperature", "device": oven, "condition": "above", "limit": 220,
                 "from": (T0 - timedelta(hours=1)).isoformat(),
                 "to": (T0 + timedelta(hours=1)).isoformat()}  # fmt: skip
    async with collector.client(Role.reader) as api:
        answer = await api.post("/api/v1/recall/by-condition", json=condition)
    assert answer.status_code == 200, answer.text
    [gap] = _loop_gaps(answer.json())
    assert wip in gap and product in gap


async def test_a_dag_with_diamonds_reports_no_loop(
    bakery: Plant,  # noqa: F811
    collector: RunningCollector,
) -> None:
    p = bakery  # SUGAR reaches CAKE twice: a diamond, not a loop
    for path in (
        f"/api/v1/lots/01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}/trace/forward",
        f"/api/v1/lots/01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}/recall",
        f"/api/v1/lots/01/{BREAD_GTIN}/10/{p.lot('BREAD')}/trace/backward",
    ):
        body = await _get(collector, path)
        assert body["lots"] if "lots" in body else body["lines"]
        assert _loop_gaps(body) == [], body["gaps"]


def test_cycles_finds_each_loop_and_self_links() -> None:
    links = [(1, 2), (2, 3), (3, 2), (3, 4), (4, 5), (5, 6), (6, 4), (7, 7), (8, 9), (1, 9)]
    assert cycles(links) == [[2, 3], [4, 5, 6], [7]]


def test_cycles_of_a_dag_is_empty() -> None:
    links = [(i, j) for i in range(60) for j in range(i + 1, min(i + 4, 60))]
    assert cycles(links) == []


def test_cycles_of_a_long_loop_needs_no_recursion() -> None:
    n = 50_000
    links = [(i, (i + 1) % n) for i in range(n)]
    random.shuffle(links)
    [loop] = cycles([*links, (n + 1, 0), (0, n + 2)])
    assert loop == list(range(n))
