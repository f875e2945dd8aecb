"""The lines and edges page as HTML, without a browser: the fleet in the order a shift lead
needs it, each edge's outbox, alarms, lines (their batch linked) and devices, in the
plant's time zone; every text an edge sent escaped; a partner refused; Chinese."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloud_collector import broker_identities, edge_status
from cloud_collector.auth import Role, issue, set_partner
from cloud_collector.broker_identities import IdentityKind
from cloud_collector.edge_status import EdgeView
from cloud_collector.pages.lines_page import attention, duration
from protocols.mqtt.contract import EdgeStatus
from tests.cloud_collector.pages.seed import signed_in
from tests.conftest import RunningCollector, Services

HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>{{7*7}}"
STARTED = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)  # 14:30 in Shanghai


async def put(database_url: str, *statuses: EdgeStatus) -> None:
    """Register each status's edge and store the status as the keeper would."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for status in statuses:
            await broker_identities.issue(conn, status.edge_id, IdentityKind.edge, rotate=True)
            assert await edge_status.store(conn, status, retained=False)


def online(edge_id: str, **fields: Any) -> EdgeStatus:
    now = datetime.now(UTC)
    fields.setdefault("interval_s", 600)  # never silent while a test runs
    return EdgeStatus(edge_id=edge_id, state="online", time=now, session=now, **fields)


def offline(edge_id: str) -> EdgeStatus:
    # The will of the connection the online status came from: it comes after it.
    return EdgeStatus(edge_id=edge_id, state="offline", time=datetime.now(UTC))


def fleet_order(html: str) -> list[str]:
    return re.findall(r'data-edge="([^"]+)" data-state="[a-z]+" data-testid="edge"', html)


@pytest.fixture
def shanghai(collector: RunningCollector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector.settings, "plant_timezone", "Asia/Shanghai")


async def test_the_fleet_in_order_of_attention_with_lines_and_devices(
    services: Services, collector: RunningCollector, shanghai: None
) -> None:
    tag = uuid.uuid4().hex[:8]
    fine, busy, alarmed, gone = (f"{n}-{tag}" for n in ("fine", "busy", "alarmed", "gone"))
    await put(
        services.database_url,
        online(
            fine,
            version="1.4.2",
            outbox_depth=0,
            last_ack_at=STARTED,
            lines=[{"line": "line-1", "batch": f"B-{tag}", "batch_started_at": STARTED}],
            devices=[
                {
                    "device": "oven-1",
                    "station": "line-1",
                    "connected": True,
                    "values": [
                        {"tag": "temperature", "value": 201.5, "unit": "Cel", "time": STARTED}
                    ],
                }
            ],
        ),
        online(busy, outbox_depth=5000, outbox_oldest_age_s=900),
        online(alarmed, alarms=["outbox 90 % full"], outbox_depth=10, outbox_oldest_age_s=5),
        online(gone),
    )
    await put(services.database_url, offline(gone))
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        answer = await http.get("/lines")
    html = answer.text
    assert answer.status_code == 200, html
    mine = [e for e in fleet_order(html) if e.endswith(tag)]
    # Offline first; then the troubled: the outbox that has held a record for 15 min before
    # the alarm (its outbox drains); the edge that is fine last.
    assert mine == [gone, busy, alarmed, fine]
    fine_card = html.split(f'data-edge="{fine}"', 1)[1].split("</article>", 1)[0]
    assert f'<a href="/batches/B-{tag}" data-testid="batch-link">B-{tag}</a>' in fine_card
    assert "2026-12-02 14:30:00" in fine_card  # the batch's start, in the plant's zone
    assert "temperature = 201.5 Cel" in fine_card and "1.4.2" in fine_card
    busy_card = html.split(f'data-edge="{busy}"', 1)[1].split("</article>", 1)[0]
    assert "<strong>5000</strong>" in busy_card and "<strong>15 min</strong>" in busy_card
    assert '<script src="/static/pages/lines.js"></script>' in html
    assert 'aria-current="page">Lines and edges</a>' in html


async def test_every_text_an_edge_sent_is_escaped(
    services: Services, collector: RunningCollector
) -> None:
    edge = f"hostile-{uuid.uuid4().hex[:8]}"
    await put(
        services.database_url,
        online(
            edge,
            version=HOSTILE[:100],
            alarms=[HOSTILE],
            lines=[{"line": "line-9", "batch": "../" + HOSTILE[:100]}],
            devices=[
                {"device": "plc-1", "station": "line-9", "connected": False, "last_error": HOSTILE}
            ],
        ),
    )
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        answer = await http.get("/lines")
    html = answer.text
    card = html.split(f'data-edge="{edge}"', 1)[1].split("</article>", 1)[0]
    assert "<script>alert" not in html and "<img src=x" not in html
    assert card.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4  # version, alarm, batch, error
    assert '<td class="device-error">&lt;script&gt;alert(1)' in card
    # The batch's link stays one path segment under /batches/.
    href = re.search(r'href="([^"]+)" data-testid="batch-link"', card)
    assert href and href.group(1).startswith("/batches/..%2F%3Cscript%3E")
    for script in re.findall(r"<script[^>]*>", html):
        assert 'src="/static/pages/' in script or 'type="application/json"' in script, script


async def test_a_partner_is_refused(services: Services, collector: RunningCollector) -> None:
    async with await psycopg.AsyncConnection.connect(
        services.database_url, autocommit=True
    ) as conn:
        await set_partner(conn, "DIST-LINES", [], [])
        partner = await issue(conn, f"p-{uuid.uuid4().hex[:6]}", Role.partner, "DIST-LINES")
    async with signed_in(collector, partner.key) as http:
        page = await http.get("/lines")
        api = await http.get("/api/v1/edges")
    assert page.status_code == 403 and "has role partner" in page.text
    assert 'data-testid="fleet"' not in page.text and 'href="/lines"' not in page.text
    assert api.status_code == 403


async def test_in_chinese(services: Services, collector: RunningCollector) -> None:
    edge = f"zh-{uuid.uuid4().hex[:8]}"
    await put(services.database_url, online(edge, outbox_depth=3, outbox_oldest_age_s=4000))
    await put(services.database_url, offline(edge))
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        answer = await http.get("/lines", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    html = answer.text
    card = html.split(f'data-edge="{edge}"', 1)[1].split("</article>", 1)[0]
    assert "<h1>产线与边缘节点</h1>" in html
    assert '<span class="badge">离线</span>' in card
    assert "<strong>1 小时 6 分钟</strong>" in card  # the oldest record's age
    data = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html)
    assert data and json.loads(data.group(1))["labels"]["offline"] == "离线"  # as it redraws


def view(edge_id: str, state: str, **status: Any) -> EdgeView:
    return EdgeView(
        edge_id=edge_id,
        state=state,  # type: ignore[arg-type]
        state_since=None,
        registered=True,
        status_time=None,
        received_at=None,
        age_s=None,
        status=online(edge_id, **status) if status else None,
        refused=0,
        last_refused_at=None,
        last_refused_reason=None,
    )


def test_the_order_of_attention() -> None:
    edges = [
        view("a-fine", "online", outbox_depth=1),
        view("b-unknown", "unknown"),
        view("c-old-outbox", "online", outbox_depth=2, outbox_oldest_age_s=600),
        view(
            "d-device-down", "online", devices=[{"device": "x", "station": "y", "connected": False}]
        ),
        view("e-silent", "silent"),
        view("f-offline", "offline"),
        view("g-quarantine", "online", quarantined=3),
        view("h-deeper", "online", outbox_depth=900, outbox_oldest_age_s=600),
    ]
    assert [e.edge_id for e in sorted(edges, key=attention)] == [
        "f-offline",
        "e-silent",
        "h-deeper",  # an outbox not draining for 10 min: trouble, the deepest first
        "c-old-outbox",
        "d-device-down",
        "g-quarantine",
        "b-unknown",
        "a-fine",
    ]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, ""),
        (-3, "0 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (3661, "1 h 1 min"),
        (timedelta(days=2, hours=5).total_seconds(), "2 d 5 h"),
    ],
)
def test_durations(seconds: float | None, shown: str) -> None:
    assert duration(seconds, lambda text: text) == shown
