"""The lines and edges page in a real browser (Debian's Chromium through Playwright): an
offline edge above an online one, a line's batch linking to its batch page, and the page
following the edges: a status stored after it opened shows after the next poll, redrawn
by its script in the same order and words, a device's hostile error as text. Its
screenshot goes to $TRACE_PAGES_SCREENSHOTS (docs/pages) like the other pages'."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Browser, Page

from cloud_collector.auth import Role
from cloud_collector.pages.lines_page import REFRESH_S
from tests.cloud_collector.pages import test_browser
from tests.cloud_collector.pages.seed import Seeded
from tests.cloud_collector.pages.test_lines import HOSTILE, offline, online, put
from tests.cloud_collector.plant import T0
from tests.conftest import RunningCollector, Services

# The fixtures of the other browser tests: one Chromium, a seeded plant, the screenshots.
browser = test_browser.browser
plant = test_browser.plant
shots = test_browser.shots


def aged(text: str) -> str:
    """`text` without the age of the last status, which grows between two looks."""
    return re.sub(r"last status \d+ s ago", "last status … ago", text)


async def order(page: Page, tag: str) -> list[tuple[str, str]]:
    """This test's edges as the page shows them, top to bottom, with their state."""
    shown: list[list[str]] = await page.evaluate(
        "[...document.querySelectorAll('#fleet [data-testid=edge]')]"
        ".map(e => [e.dataset.edge, e.dataset.state])"
    )
    return [(edge, state) for edge, state in shown if edge.endswith(tag)]


async def test_the_fleet_follows_the_edges(
    browser: Browser,
    collector: RunningCollector,
    services: Services,
    plant: Seeded,
    shots: Path,
) -> None:
    tag = plant.plant.tag
    # By name the online edge would come first: the page puts the offline one above it.
    up, down = f"a-mixer-pc-{tag}", f"b-oven-pc-{tag}"
    batch = plant.batch("B1")
    started = T0  # the oven batch's first reading
    line = {"line": "line-1", "batch": batch, "batch_started_at": started}
    oven = {
        "device": plant.oven,
        "station": "line-1",
        "connected": True,
        "values": [{"tag": "temperature", "value": 204.25, "unit": "Cel", "time": started}],
    }
    await put(
        services.database_url,
        online(
            up,
            version="2.3.0",
            outbox_depth=12,
            outbox_oldest_age_s=1.5,
            lines=[line],
            devices=[oven],
            last_ack_at=started,
        ),
        online(down, version="2.2.9", outbox_depth=0, lines=[{"line": "line-2"}]),
    )
    await put(services.database_url, offline(down))

    watched = await test_browser.open_signed_in(browser, collector, collector.keys[Role.reader])
    page = watched.page
    await page.goto("/lines")
    assert await order(page, tag) == [(down, "offline"), (up, "online")]
    link = page.locator(f"[data-edge='{up}'] [data-testid=batch-link]")
    assert await link.get_attribute("href") == f"/batches/{batch}"
    served = aged(await page.inner_text(f"[data-edge='{up}']"))

    # The first poll redraws the same fleet in the same words.
    await page.wait_for_selector("#fleet[data-polls='1']", timeout=(REFRESH_S + 10) * 1000)
    assert await order(page, tag) == [(down, "offline"), (up, "online")]
    assert aged(await page.inner_text(f"[data-edge='{up}']")) == served
    await page.screenshot(path=shots / "lines.png", full_page=True)

    # The oven PC comes back; the mixer PC's oven drops out and its outbox stops draining.
    await put(services.database_url, online(down, version="2.3.0", outbox_depth=0))
    await put(
        services.database_url,
        online(
            up,
            version="2.3.0",
            outbox_depth=480,
            outbox_oldest_age_s=240,
            lines=[line],
            devices=[{**oven, "connected": False, "failures": 7, "last_error": HOSTILE}],
            alarms=["outbox is not draining"],
        ),
    )
    await page.wait_for_selector(
        f"[data-edge='{down}'][data-state=online]", timeout=(REFRESH_S + 10) * 1000
    )
    # Both online now: the one in trouble (its outbox, its device) comes first.
    assert await order(page, tag) == [(up, "online"), (down, "online")]
    card = page.locator(f"[data-edge='{up}']")
    assert "trouble" in (await card.get_attribute("class") or "")
    assert await card.locator(".device-error").inner_text() == HOSTILE
    assert await page.locator("#fleet img, #fleet script").count() == 0
    outbox = await card.locator("[data-testid=outbox]").inner_text()
    assert "480" in outbox and "4 min" in outbox and "growing" in outbox
    assert "outbox is not draining" in await card.locator(".alarms").inner_text()

    # The line's batch opens its batch page, charts and all.
    await card.locator("[data-testid=batch-link]").click()
    await page.wait_for_url(f"**/batches/{batch}")
    assert batch in await page.inner_text("h1")
    await page.wait_for_selector("#charts[data-status=ready]", timeout=30_000)
    assert watched.problems == [], "\n".join(watched.problems)
