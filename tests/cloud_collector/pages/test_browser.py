"""The pages in a real browser: Debian's Chromium, headless, driven by Playwright against
the running collector with a seeded plant. Sign in, search a lot by its scanned label,
the graph's nodes and its loop, a click moving the trace, the chart's points and limit
band, the overlay, a download's rows (the recall of a lot and by process condition), the
print view, a partner's view; no script error and no Content-Security-Policy violation on
any page. A genealogy of a thousand nodes is
laid out and its time reported.

Screenshots of each page go to $TRACE_PAGES_SCREENSHOTS (docs/pages when refreshing the
README's pictures), else to the test's temporary folder."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from protocols.gs1.keys import with_check_digit
from protocols.mqtt import topics
from tests.cloud_collector.pages.seed import (
    CAKE_OVEN_READINGS,
    HOT,
    OVEN_HIGH,
    OVEN_LOW,
    OVEN_READINGS,
    Seeded,
    seed,
)
from tests.cloud_collector.plant import (
    BREAD_GTIN,
    DOUGH_GTIN,
    FLOUR_GTIN,
    T0,
    Plant,
    lot_item,
)
from tests.conftest import RunningCollector, Services

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium package "
            "(`make test` installs it through deploy/browser.sh; or apt-get install chromium)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def plant(services: Services, collector: RunningCollector) -> Seeded:
    return await seed(services, collector)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TRACE_PAGES_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watched:
    """A page whose script errors and CSP violations are kept, to be asserted empty."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"page error: {err}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(f"console {message.type}: {message.text}")


async def open_signed_in(
    browser: Browser,
    collector: RunningCollector,
    key: str,
    language: str = "en-GB",
    shots: Path | None = None,
) -> Watched:
    context = await browser.new_context(
        base_url=collector.api_url,
        locale=language,
        viewport={"width": 1440, "height": 1000},
        accept_downloads=True,
    )
    watched = Watched(await context.new_page())
    page = watched.page
    await page.goto("/trace")  # no session: to the sign-in form, and back after it
    assert "/signin?next=" in page.url
    if shots:
        await page.screenshot(path=shots / "signin.png")
    await page.fill("#key", key)
    await page.click("form[action='/signin'] button[type=submit]")
    await page.wait_for_url("**/trace")
    return watched


async def test_search_a_scanned_label_and_walk_the_graph(
    browser: Browser, collector: RunningCollector, plant: Seeded, shots: Path
) -> None:
    watched = await open_signed_in(browser, collector, collector.keys[Role.reader], shots=shots)
    page = watched.page
    # As a keyboard-wedge scanner types a GS1-128 label: symbology id, AIs run together.
    await page.fill("#lot", f"]C101{DOUGH_GTIN}10{plant.lot('DOUGH')}")
    await page.press("#lot", "Enter")
    await page.wait_for_selector("#graph[data-status=ready]", timeout=30_000)
    ids = await page.evaluate("traceGraph.nodes().map(n => n.id())")
    lots = await page.evaluate(
        "Object.fromEntries(traceGraph.nodes('.lot')"
        ".map(n => [n.data('label').split('\\n')[0], n.id()]))"
    )
    assert set(lots) == {plant.lot(n) for n in ("FLOUR", "SUGAR", "DOUGH", "BREAD", "CAKE")}
    assert {f"batch:{plant.batch(b)}" for b in ("B1", "B2", "B3", "RW")} <= set(ids)
    assert f"receipt:PO-{plant.plant.tag}" in ids
    assert {f"shipment:SH-1-{plant.plant.tag}", f"shipment:SH-2-{plant.plant.tag}"} <= set(ids)
    assert f"customer:C1-{plant.plant.tag}" in ids
    # The loop DOUGH -> B2 -> BREAD -> RW -> DOUGH, drawn as such; nothing else is.
    loop = await page.evaluate(
        "traceGraph.edges('.loop').map(e => [e.source().id(), e.target().id()])"
    )
    dough, bread = lots[plant.lot("DOUGH")], lots[plant.lot("BREAD")]
    b2, rw = f"batch:{plant.batch('B2')}", f"batch:{plant.batch('RW')}"
    assert sorted(map(tuple, loop)) == sorted([(dough, b2), (b2, bread), (bread, rw), (rw, dough)])
    shapes = await page.evaluate(
        "Object.fromEntries(['lot','batch','receipt','shipment','customer']"
        ".map(k => [k, traceGraph.nodes('.' + k)[0].style('shape')]))"
    )
    assert len(set(shapes.values())) == 5, shapes
    assert await page.evaluate(
        f"traceGraph.getElementById('batch:{plant.batch('B1')}').hasClass('excursion')"
    )
    # Laid out left to right: the flour (upstream) left of the dough, the cake right of it.
    x = await page.evaluate(
        "Object.fromEntries(traceGraph.nodes().map(n => [n.id(), n.position('x')]))"
    )
    assert x[lots[plant.lot("FLOUR")]] < x[dough] < x[lots[plant.lot("CAKE")]]
    await page.screenshot(path=shots / "trace.png", full_page=False)

    # A click on the bread moves the trace there.
    await page.locator("#graph").scroll_into_view_if_needed()
    await page.wait_for_timeout(300)  # cytoscape re-reads its place on the page after a scroll
    where = await page.evaluate(f"traceGraph.getElementById('{bread}').renderedPosition()")
    box = await page.locator("#graph").bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + where["x"], box["y"] + where["y"])
    await page.wait_for_url(f"**/trace?lot={bread.split(':')[1]}")
    await page.wait_for_selector("#graph[data-status=ready]", timeout=30_000)
    assert plant.lot("BREAD") in await page.inner_text("h1")

    # The print view: no navigation or search, the graph as an image, stamped.
    await page.emulate_media(media="print")
    assert not await page.is_visible("header.top")
    assert await page.evaluate(
        "document.getElementById('graph-print').src.startsWith('data:image/png')"
    )
    assert "test-" in await page.inner_text("[data-testid=stamp]")
    await page.pdf(path=str(shots / "trace-report.pdf"))
    await page.emulate_media(media="screen")

    # The switch to Chinese keeps the page (and the search) where it was.
    await page.click("header.top a[lang=zh-Hans]")
    await page.wait_for_selector("#graph[data-status=ready]", timeout=30_000)
    assert "追溯报告" in await page.inner_text("h1")
    assert f"lot={bread.split(':')[1]}" in page.url
    await page.screenshot(path=shots / "trace-zh.png")
    assert watched.problems == [], "\n".join(watched.problems)


async def test_a_batch_chart_draws_its_points_band_and_excursions(
    browser: Browser, collector: RunningCollector, plant: Seeded, shots: Path
) -> None:
    watched = await open_signed_in(browser, collector, collector.keys[Role.reader])
    page = watched.page
    await page.goto(f"/batches/{plant.batch('B1')}")
    await page.wait_for_selector("#charts[data-status=ready]", timeout=30_000)
    option = await page.evaluate(
        "(() => { const o = echarts.getInstanceByDom(document.querySelector('[data-tag]'))"
        ".getOption(); return {points: o.series[0].data.length, band: o.series[0].markArea.data,"
        " out: o.series[3].data.length}; })()"
    )
    assert option["points"] == OVEN_READINGS
    assert option["band"] == [[{"yAxis": OVEN_LOW}, {"yAxis": OVEN_HIGH}]] or [
        [a["yAxis"], b["yAxis"]] for a, b in option["band"]
    ] == [[OVEN_LOW, OVEN_HIGH]]
    assert option["out"] == len(HOT)
    await page.screenshot(path=shots / "batch.png", full_page=True)

    # The overlay of the line's batches: the form on the page, B1 and B3 checked.
    await page.goto(
        f"/compare?tag={plant.oven}/temperature&batch={plant.batch('B1')}&batch={plant.batch('B3')}"
    )
    await page.wait_for_selector("#compare[data-status=ready]", timeout=30_000)
    lengths = await page.evaluate(
        "echarts.getInstanceByDom(document.getElementById('compare')).getOption()"
        ".series.map(s => [s.name, s.data.length, s.data[0][0]])"
    )
    assert [(n, c) for n, c, _ in lengths] == [
        (plant.batch("B1"), OVEN_READINGS),
        (plant.batch("B3"), CAKE_OVEN_READINGS),
    ]
    assert all(start == 0 for _, _, start in lengths)  # each from its own first reading
    await page.screenshot(path=shots / "compare.png")

    await page.goto("/batches?line=line-1&excursion=true")
    assert plant.batch("B1") in await page.inner_text("[data-testid=batches]")
    await page.screenshot(path=shots / "batches.png")
    assert watched.problems == []


async def test_a_batch_gap_is_marked_on_its_node_and_a_shipment_node_moves_there(
    browser: Browser, collector: RunningCollector, services: Services, shots: Path
) -> None:
    """A mill: flour received (PO), batch U made 1,000 kg of dough from 500 kg of flour (its
    inputs and outputs do not balance), 100 kg of the dough shipped to a customer."""
    p = Plant(services)
    flour, dough = p.lot("FLOUR"), p.lot("DOUGH")
    await p.post(
        p.receipt([lot_item(FLOUR_GTIN, flour, 500, "KGM")], f"PO-{p.tag}"),
        p.batch(
            f"U-{p.tag}",
            [lot_item(FLOUR_GTIN, flour, 500, "KGM")],
            [lot_item(DOUGH_GTIN, dough, 1000, "KGM")],
        ),
        p.shipment([lot_item(DOUGH_GTIN, dough, 100, "KGM")], f"SH-{p.tag}"),
    )
    async with collector.client(Role.importer) as api:
        for path, body in (
            ("/api/v1/erp/customers", [{"customer_id": f"C-{p.tag}", "name": "Bakery Co"}]),
            ("/api/v1/erp/shipments", [{"shipment": f"SH-{p.tag}", "customer_id": f"C-{p.tag}"}]),
        ):
            assert (await api.put(path, json=body)).status_code == 200
    watched = await open_signed_in(browser, collector, collector.keys[Role.reader])
    page = watched.page
    await page.goto(f"/trace?lot=01/{FLOUR_GTIN}/10/{flour}")
    await page.wait_for_selector("#graph[data-status=ready]", timeout=30_000)
    u = f"batch:U-{p.tag}"
    node = await page.evaluate(
        f"(() => {{ const n = traceGraph.getElementById('{u}'); return {{classes: n.classes(),"
        " label: n.data('label'), title: n.data('title'), border: n.style('border-style')}; })()"
    )
    assert "unbalanced" in node["classes"] and node["border"] == "double"
    assert node["label"].splitlines()[-1] == "⚠ gap: no readings; inputs and outputs do not balance"
    assert "inputs 500 KGM and outputs 1000 KGM do not balance within 5%" in node["title"]
    lots = await page.evaluate(
        "Object.fromEntries(traceGraph.nodes('.lot')"
        ".map(n => [n.data('label').split('\\n')[0], n.id().split(':')[1]]))"
    )
    hrefs = await page.evaluate(
        "Object.fromEntries(traceGraph.nodes().map(n => [n.id(), n.data('href')]))"
    )
    assert hrefs[f"receipt:PO-{p.tag}"] == f"/trace?lot={lots[flour]}#receipts"
    assert hrefs[f"customer:C-{p.tag}"] == f"/recall?lot={lots[flour]}"
    assert all(hrefs.values()), hrefs  # every node leads somewhere

    async def at(node_id: str) -> tuple[float, float]:
        await page.locator("#graph").scroll_into_view_if_needed()
        await page.wait_for_timeout(300)  # cytoscape re-reads its place after a scroll
        where = await page.evaluate(f"traceGraph.getElementById('{node_id}').renderedPosition()")
        box = await page.locator("#graph").bounding_box()
        assert box is not None
        return box["x"] + where["x"], box["y"] + where["y"]

    # Hovering the batch tells why it is marked.
    await page.mouse.move(*await at(u))
    assert "do not balance" in (await page.get_attribute("#graph", "title") or "")
    await page.screenshot(path=shots / "trace-gaps.png")

    # A click on the shipment moves to the shipped lot's trace, at its shipments.
    await page.mouse.click(*await at(f"shipment:SH-{p.tag}"))
    await page.wait_for_url(f"**/trace?lot={lots[dough]}#shipments")
    await page.wait_for_selector("#graph[data-status=ready]", timeout=30_000)
    assert dough in await page.inner_text("h1")
    assert f"SH-{p.tag}" in await page.inner_text("[data-testid=shipments]")

    # In Chinese, the batch's reason too.
    await page.click("header.top a[lang=zh-Hans]")
    await page.wait_for_selector("#graph[data-status=ready]", timeout=30_000)
    label = await page.evaluate(f"traceGraph.getElementById('{u}').data('label')")
    assert label.splitlines()[-1] == "⚠ 缺口：无读数；投入与产出不平衡"  # noqa: RUF001
    assert watched.problems == [], "\n".join(watched.problems)


async def post_readings(services: Services, edge: str, runs: dict[str, tuple[str, int]]) -> None:
    """Oven readings, one a minute: per batch, its line and how many."""
    records, seq = [], 0
    for batch, (line, count) in runs.items():
        for i in range(count):
            records.append(
                {
                    "kind": "reading",
                    "seq": seq,
                    "time": (T0 + timedelta(minutes=seq)).isoformat(),
                    "line": line,
                    "batch": batch,
                    "device": f"oven-{edge}",
                    "tag": "temperature",
                    "value": 200.0 + i % 5,
                    "unit": "Cel",
                }
            )
            seq += 1
    payload = {"edge_id": edge, "stream": "readings", "epoch": "e", "records": records}
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        outcome = await ingest(c, topics.data(edge, "readings"), json.dumps(payload).encode())
    assert outcome.inserted == seq, outcome


async def test_one_tag_overlaid_across_the_batches_of_a_product(
    browser: Browser, collector: RunningCollector, services: Services, shots: Path
) -> None:
    """P1 and P2 made the same product (a GTIN of this test's own) on two lines; Q1 another
    product on P1's line."""
    p = Plant(services)
    product = with_check_digit(f"0950601{int(p.tag, 16) % 10**6:06d}")
    one, two = f"L1-{p.tag}", f"L2-{p.tag}"
    p1, p2, q1 = f"P1-{p.tag}", f"P2-{p.tag}", f"Q1-{p.tag}"
    await p.post(
        p.batch(p1, [], [lot_item(product, p.lot("A"), 10, "KGM")], line=one),
        p.batch(p2, [], [lot_item(product, p.lot("B"), 10, "KGM")], line=two),
        p.batch(q1, [], [lot_item(BREAD_GTIN, p.lot("C"), 10, "EA")], line=one),
    )
    await post_readings(services, p.edge, {p1: (one, 30), p2: (two, 20), q1: (one, 10)})
    tag = f"oven-{p.edge}/temperature"
    watched = await open_signed_in(browser, collector, collector.keys[Role.reader])
    page = watched.page

    async def series() -> list[tuple[str, int]]:
        await page.wait_for_selector("#compare[data-status=ready]", timeout=30_000)
        return [
            (name, count)
            for name, count in await page.evaluate(
                "echarts.getInstanceByDom(document.getElementById('compare')).getOption()"
                ".series.map(s => [s.name, s.data.length])"
            )
        ]

    async def offered() -> list[str]:
        boxes = page.locator("[data-testid=overlay] input[name=batch]")
        return sorted(await boxes.evaluate_all("xs => xs.map(x => x.value)"))

    await page.goto(f"/batches/{p1}")
    assert await offered() == sorted([p1, q1])  # its line's, by default
    await page.click("[data-testid=overlay] a[data-peers=product]")
    await page.wait_for_url(f"**/batches/{p1}?peers=product")
    assert await offered() == sorted([p1, p2])
    await page.select_option("[data-testid=overlay] select[name=tag]", tag)
    await page.click("[data-testid=overlay] button[type=submit]")
    assert sorted(await series()) == sorted([(p1, 30), (p2, 20)])
    await page.screenshot(path=shots / "compare-product.png")

    # From the filtered list: the product's batches, both checked, overlaid.
    await page.goto(f"/batches?product={product}")
    listed = page.locator("[data-testid=batches] input[name=batch]")
    assert sorted(await listed.evaluate_all("xs => xs.map(x => x.value)")) == sorted([p1, p2])
    await listed.nth(0).check()
    await listed.nth(1).check()
    await page.select_option("[data-testid=overlay-chosen] select[name=tag]", tag)
    await page.click("[data-testid=overlay-chosen] button[type=submit]")
    assert sorted(await series()) == sorted([(p1, 30), (p2, 20)])
    assert watched.problems == [], "\n".join(watched.problems)


async def test_the_recall_downloads_have_the_recall_s_rows_by_lot_and_by_condition(
    browser: Browser, collector: RunningCollector, plant: Seeded, shots: Path
) -> None:
    watched = await open_signed_in(browser, collector, collector.keys[Role.reader])
    page = watched.page
    await page.goto("/recall")
    await page.fill("#lot", plant.lot("DOUGH"))
    await page.press("#lot", "Enter")
    await page.wait_for_selector("[data-testid=recall]")
    affected = int(await page.inner_text("[data-testid=affected]"))
    shown = await page.locator("[data-testid=lines] tbody tr").count()
    async with page.expect_download() as started:
        await page.click("[data-testid=download-csv]")
    download = await started.value
    saved = await download.path()
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert affected == 3  # dough, bread, cake
    # Bread shipped, cake shipped in part and the rest on hand; the dough all used up.
    assert len(rows) == shown == 3
    assert sorted((r["lot_code"], r["status"]) for r in rows) == [
        (plant.lot("BREAD"), "shipped"),
        (plant.lot("CAKE"), "on_hand"),
        (plant.lot("CAKE"), "shipped"),
    ]
    async with page.expect_download() as xlsx:
        await page.click("[data-testid=download-fsma-xlsx]")
    assert (await xlsx.value).suggested_filename.endswith(".xlsx")
    await page.screenshot(path=shots / "recall.png", full_page=True)

    # By process condition: B1 (which made the dough) ran above the oven's high limit.
    form = "form.condition"
    await page.fill(f"{form} input[name=tag]", "temperature")
    await page.fill(f"{form} input[name=device]", plant.oven)
    await page.select_option(f"{form} select[name=condition]", "above")
    await page.fill(f"{form} input[name=limit]", str(OVEN_HIGH))
    await page.fill(f"{form} input[name=from]", f"{T0 - timedelta(hours=1):%Y-%m-%dT%H:%M}")
    await page.fill(f"{form} input[name=to]", f"{T0 + timedelta(hours=6):%Y-%m-%dT%H:%M}")
    await page.click(f"{form} button[type=submit]")
    await page.wait_for_selector("[data-testid=condition-recall]")
    assert await page.inner_text("[data-testid=condition-affected]") == "3"  # as the dough's
    stock = await page.locator("[data-testid=condition-stock] tbody tr").all_inner_texts()
    assert len(stock) == 1 and "300 EA" in stock[0]  # the cake not shipped
    customers = await page.locator("[data-testid=condition-customers] tbody tr").all_inner_texts()
    assert [c.split("\t")[0] for c in customers] == ["Bakery Co", "(not known to the ERP)"]
    async with page.expect_download() as started:
        await page.click("[data-testid=condition-download-csv]")
    saved = await (await started.value).path()
    by_condition = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert sorted(by_condition, key=str) == sorted(rows, key=str)
    async with page.expect_download() as workbook:
        await page.click("[data-testid=condition-download-fsma-xlsx]")
    assert (await workbook.value).suggested_filename.endswith(".xlsx")
    await page.screenshot(path=shots / "recall-condition.png", full_page=True)
    assert watched.problems == []


async def test_a_partner_sees_only_its_own_in_chinese(
    browser: Browser, collector: RunningCollector, plant: Seeded, shots: Path
) -> None:
    context = await browser.new_context(base_url=collector.api_url, locale="zh-CN")
    watched = Watched(await context.new_page())
    page = watched.page
    await page.goto("/")
    assert "登录" in await page.inner_text("h1")
    await page.fill("#key", plant.partner_key)
    await page.click("form[action='/signin'] button[type=submit]")
    await page.wait_for_url("**/partner")
    assert await page.locator("[data-testid=partner-lots] tbody tr").all_inner_texts() == [
        f"{plant.lot('BREAD')}\t{BREAD_GTIN}"
    ]
    await page.screenshot(path=shots / "partner.png")
    await page.goto(f"/trace?lot={plant.lot('BREAD')}")
    assert "has role partner" in await page.inner_text("[data-testid=refused]")
    assert watched.problems == [] or all("403" in p for p in watched.problems)


async def test_a_genealogy_of_a_thousand_nodes_is_laid_out(
    browser: Browser, collector: RunningCollector, services: Services
) -> None:
    """One lot used by 333 batches, each making a lot that went out on its own shipment:
    1,000 nodes and 999 edges on one page."""
    p = Plant(services)
    root = p.lot("ROOT")
    n = 333
    await p.post(
        *[
            p.batch(
                f"W{i}-{p.tag}",
                [lot_item(DOUGH_GTIN, root, 1, "KGM")],
                [lot_item(BREAD_GTIN, p.lot(f"OUT{i}"), 10, "EA")],
            )
            for i in range(n)
        ],
        *[
            p.shipment([lot_item(BREAD_GTIN, p.lot(f"OUT{i}"), 10, "EA")], f"SW{i}-{p.tag}")
            for i in range(n)
        ],
    )
    watched = await open_signed_in(browser, collector, collector.keys[Role.reader])
    page = watched.page
    await page.goto(f"/trace?lot=01/{DOUGH_GTIN}/10/{root}")
    await page.wait_for_selector("#graph[data-status=ready]", timeout=120_000)
    count = await page.evaluate("traceGraph.nodes().length")
    took = int(await page.get_attribute("#graph", "data-layout-ms") or -1)
    print(f"\n1,000-node genealogy: laid out in {took} ms in the browser's worker")
    assert count == 1 + 2 * n + n
    assert watched.problems == []
    # The page stayed responsive while ELK worked in its worker: a zoom answers at once.
    assert (
        await page.evaluate(
            "(() => { const t = performance.now(); traceGraph.zoom(0.5);"
            " return performance.now() - t; })()"
        )
        < 1000
    )
