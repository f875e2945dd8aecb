"""The pages as HTML, without a browser: what the trace, batch and recall pages say about a
seeded plant, that every byte of a search is escaped, the security headers, the two
languages, and that a partner's session sees what its key would see."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from cloud_collector.auth import Role
from cloud_collector.pages.render import CONTENT_SECURITY_POLICY
from tests.cloud_collector.pages.seed import OVEN_HIGH, Seeded, seed, signed_in
from tests.cloud_collector.plant import DOUGH_GTIN, T0
from tests.conftest import RunningCollector, Services


@pytest.fixture
async def plant(services: Services, collector: RunningCollector) -> Seeded:
    return await seed(services, collector)


def cells(html: str, testid: str) -> list[str]:
    """The first cell of each body row of the table `data-testid=testid`, as text."""
    table = html.split(f'data-testid="{testid}"', 1)[1].split("</table>", 1)[0]
    rows = table.split("<tbody>", 1)[1].split("<tr")[1:]
    return [
        re.sub(r"<[^>]+>", "", r.split("<td", 2)[1].split(">", 1)[1].split("</td>")[0])
        for r in rows
    ]


async def test_the_trace_report_of_the_dough(plant: Seeded, collector: RunningCollector) -> None:
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        # A scanned label, pasted as is: element string with its Group Separator.
        scanned = f"01{DOUGH_GTIN}10{plant.lot('DOUGH')}\x1d"
        answer = await http.get("/trace", params={"lot": scanned})
    html = answer.text
    assert answer.status_code == 200, html
    assert "Trace report</h1>" not in html  # the heading carries the lot
    assert f"{plant.lot('DOUGH')}</h1>" in html
    assert sorted(cells(html, "upstream")) == sorted(
        [plant.lot("FLOUR"), plant.lot("SUGAR"), plant.lot("BREAD")]
    )
    assert sorted(cells(html, "downstream")) == sorted([plant.lot("BREAD"), plant.lot("CAKE")])
    assert "reaches itself" in html  # the loop, as a gap
    assert "test-" in html.split('data-testid="stamp"', 1)[1].split("</p>")[0]
    assert "dough pH" in html  # B1's QC
    assert "⚠ 6 (below 0, above 6)" in html  # B1's oven excursion


async def test_unknown_and_ambiguous_lots_say_so(
    plant: Seeded, collector: RunningCollector
) -> None:
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        unknown = await http.get("/trace", params={"lot": "NO-SUCH-LOT-" + plant.plant.tag})
        nul = await http.get("/recall", params={"lot": "A\x00B"})
    assert unknown.status_code == 404 and "no lot is known as" in unknown.text
    assert nul.status_code == 422 and "control characters" in nul.text


async def test_every_byte_of_a_search_is_escaped(collector: RunningCollector) -> None:
    hostile = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>{{7*7}}"
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        answers = [
            await http.get("/trace", params={"lot": hostile}),
            await http.get("/recall", params={"lot": hostile}),
            await http.get("/batches", params={"product": hostile, "line": hostile}),
            await http.get("/batches/" + hostile.replace("/", "")),
        ]
    for answer in answers:
        assert "<script>alert" not in answer.text and "<img src=x" not in answer.text
        assert "&lt;script&gt;alert(1)&lt;" in answer.text, answer.url
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    # No inline script at all: every <script> either loads a file or holds JSON.
    for answer in answers:
        for tag in re.findall(r"<script[^>]*>", answer.text):
            assert 'src="/static/pages/' in tag or 'type="application/json"' in tag, tag


async def test_the_batch_page_lists_its_parameters_qc_and_sides(
    plant: Seeded, collector: RunningCollector
) -> None:
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        page = await http.get(f"/batches/{plant.batch('B1')}")
        listed = await http.get("/batches", params={"excursion": "true", "line": "line-1"})
        calm = await http.get("/batches", params={"product": DOUGH_GTIN})
    assert page.status_code == 200
    assert plant.oven in page.text and "170.00 … 230.00" in page.text
    assert "dough pH" in page.text and "OP-7" in page.text
    chart = re.search(
        r'<script type="application/json" id="page-data">(.*?)</script>', page.text, re.S
    )
    assert chart and '"points": 1000' in chart.group(1)
    ids = cells(listed.text, "batches")
    assert plant.batch("B1") in ids and plant.batch("B2") not in ids
    assert plant.batch("B1") in cells(calm.text, "batches")  # it made the dough
    assert plant.batch("B3") not in cells(calm.text, "batches")


async def test_the_recall_page_lists_customers_stock_and_downloads(
    plant: Seeded, collector: RunningCollector
) -> None:
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        page = await http.get("/recall", params={"lot": plant.lot("DOUGH")})
        csv_link = re.search(r'data-testid="download-csv" href="([^"]+)"', page.text)
        assert csv_link is not None
        download = await http.get(csv_link.group(1).replace("&amp;", "&"))
        api = await http.get(f"/api/v1/lots/{plant.lot('DOUGH')}/recall")
    assert page.status_code == 200
    assert cells(page.text, "customers") == ["Bakery Co", "(not known to the ERP)"]
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert len(download.text.strip().splitlines()) == 1 + len(api.json()["lines"])


def condition_form(plant: Seeded) -> dict[str, str]:
    """The condition form filled for the seeded oven's excursion: B1 ran above its high
    limit (times in the plant's zone, UTC here, as the form's datetime-local gives them)."""
    return {
        "tag": "temperature",
        "device": plant.oven,
        "condition": "above",
        "limit": str(OVEN_HIGH),
        "from": (T0 - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
        "to": (T0 + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M"),
    }


async def test_the_condition_recall_lists_stock_customers_and_downloads(
    plant: Seeded, collector: RunningCollector
) -> None:
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        page = await http.get("/recall/condition", params=condition_form(plant))
        chinese = await http.get(
            "/recall/condition", params=condition_form(plant), headers={"Accept-Language": "zh"}
        )
        links = dict(
            re.findall(r'data-testid="(condition-download-[a-z-]+)" href="([^"]+)"', page.text)
        )
        downloads = {k: await http.get(v.replace("&amp;", "&")) for k, v in links.items()}
        of_dough = await http.get(f"/api/v1/lots/{plant.lot('DOUGH')}/recall")
    assert page.status_code == 200, page.text
    assert cells(page.text, "condition-batch-list") == [plant.batch("B1")]
    assert cells(page.text, "condition-customers") == ["Bakery Co", "(not known to the ERP)"]
    assert cells(page.text, "condition-stock") == [
        s["location"] or "(no place recorded)" for s in of_dough.json()["on_hand"]
    ]
    assert "300 EA" in page.text.split('data-testid="condition-stock"', 1)[1].split("</table>")[0]
    assert sorted(links) == [
        "condition-download-csv",
        "condition-download-fsma-csv",
        "condition-download-fsma-xlsx",
        "condition-download-xlsx",
    ]
    assert all(d.status_code == 200 for d in downloads.values()), downloads
    recall_csv = downloads["condition-download-csv"].text.strip().splitlines()
    assert len(recall_csv) == 1 + len(of_dough.json()["lines"]) == 4
    assert "按工艺条件召回" in chinese.text and "现有库存" in chinese.text


async def test_chinese_from_the_browser_or_the_switch(collector: RunningCollector) -> None:
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        chinese = await http.get("/batches", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
        switched = await http.get(
            "/language",
            params={"to": "en", "next": "/batches"},
            follow_redirects=True,
            headers={"Accept-Language": "zh-CN"},
        )
    assert '<html lang="zh-Hans">' in chinese.text and "<h1>批次</h1>" in chinese.text
    assert '<html lang="en">' in switched.text and "<h1>Batches</h1>" in switched.text


async def test_a_partner_sees_only_its_own(plant: Seeded, collector: RunningCollector) -> None:
    async with signed_in(collector, plant.partner_key) as http:
        home = await http.get("/", follow_redirects=True)
        trace = await http.get("/trace", params={"lot": plant.lot("BREAD")})
        api = await http.get(f"/api/v1/lots/{plant.lot('BREAD')}/trace/forward")
    assert str(home.url).endswith("/partner")
    assert cells(home.text, "partner-lots") == [plant.lot("BREAD")]  # not the cake
    assert trace.status_code == 403 and "has role partner" in trace.text
    assert plant.lot("BREAD") not in trace.text.split("<main>", 1)[1]
    assert api.status_code == 403
