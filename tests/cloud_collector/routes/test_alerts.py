"""Alerts through the HTTP API: who may do what, rules and targets refused with the reason
when malformed, a webhook secret shown once, acknowledging once."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest

from cloud_collector.auth import Role
from tests.conftest import RunningCollector, Services


@pytest.fixture
async def conn(services: Services) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        yield c


def name() -> str:
    return f"n-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/v1/alerts", {Role.reader, Role.quality, Role.admin}),
        ("POST", "/api/v1/alerts/999999999/acknowledge", {Role.quality, Role.admin}),
        ("GET", "/api/v1/alert-rules", {Role.admin}),
        ("POST", "/api/v1/alert-rules", {Role.admin}),
        ("DELETE", "/api/v1/alert-rules/999999999", {Role.admin}),
        ("GET", "/api/v1/alert-targets", {Role.admin}),
        ("POST", "/api/v1/alert-targets", {Role.admin}),
        ("GET", "/api/v1/alert-deliveries", {Role.admin}),
        ("POST", "/api/v1/alert-deliveries/999999999/redeliver", {Role.admin}),
    ],
)
async def test_each_route_takes_only_its_roles(
    collector: RunningCollector, method: str, path: str, allowed: set[Role]
) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as anonymous:
        assert (await anonymous.request(method, path)).status_code == 401
    for role in collector.keys:
        async with collector.client(role) as api:
            body = {} if method == "POST" else None
            answer = await api.request(method, path, json=body)
        assert (answer.status_code != 403) == (role in allowed), (role, answer.text)


WEBHOOK = {"channel": "webhook", "url": "http://127.0.0.1:9/hook"}


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/api/v1/alert-rules", {"name": "", "condition": {"kind": "excursion"}}, "at least 1"),
        ("/api/v1/alert-rules", {"condition": {"kind": "rain"}}, "kind"),
        ("/api/v1/alert-rules", {"condition": {"kind": "device_offline"}}, "minutes"),
        (
            "/api/v1/alert-rules",
            {"condition": {"kind": "device_offline", "minutes": -1}},
            "greater than",
        ),
        ("/api/v1/alert-rules", {"condition": {"kind": "excursion", "lines": []}}, "at least 1"),
        ("/api/v1/alert-rules", {"condition": {"kind": "excursion", "colour": "red"}}, "extra"),
        ("/api/v1/alert-rules", {"condition": {"kind": "qc_failed", "checks": ["X"]}}, "IPQC"),
        ("/api/v1/alert-rules", {"condition": {"kind": "excursion", "tags": ["a\x00"]}}, "NUL"),
        ("/api/v1/alert-targets", {"channel": "webhook"}, "needs `url`"),
        ("/api/v1/alert-targets", {**WEBHOOK, "url": "ftp://x/y"}, "URL scheme"),
        ("/api/v1/alert-targets", {**WEBHOOK, "secret": "short"}, "16 characters"),
        ("/api/v1/alert-targets", {"channel": "email"}, "needs `email_to`"),
        ("/api/v1/alert-targets", {"channel": "email", "email_to": ["a@b\nBcc: c@d"]}, "pattern"),
        ("/api/v1/alert-targets", {**WEBHOOK, "kinds": ["Not A Kind"]}, "pattern"),
        ("/api/v1/alert-targets", {**WEBHOOK, "max_attempts": 0}, "greater than"),
    ],
)
async def test_a_malformed_rule_or_target_is_refused_with_the_reason(
    collector: RunningCollector, path: str, body: dict, says: str
) -> None:
    async with collector.client(Role.admin) as api:
        answer = await api.post(path, json={"name": name()} | body)
    assert answer.status_code == 422, answer.text
    assert says in answer.text


async def test_a_name_is_taken_once_and_a_webhook_secret_is_shown_only_when_made(
    collector: RunningCollector,
) -> None:
    rule = {"name": name(), "condition": {"kind": "gap_found", "edges": ["e1"]}}
    target = {"name": name(), **WEBHOOK}
    async with collector.client(Role.admin) as api:
        made = await api.post("/api/v1/alert-rules", json=rule)
        assert made.status_code == 201, made.text
        assert made.json()["condition"] == {
            "kind": "gap_found",
            "edges": ["e1"],
            "after_minutes": 5,
        }
        assert (await api.post("/api/v1/alert-rules", json=rule)).status_code == 409
        created = await api.post("/api/v1/alert-targets", json=target)
        assert created.status_code == 201, created.text
        assert len(created.json()["secret"]) >= 32
        again = await api.post("/api/v1/alert-targets", json=target)
        assert again.status_code == 409
        listed = (await api.get("/api/v1/alert-targets")).json()
        [mine] = [t for t in listed if t["name"] == target["name"]]
        assert "secret" not in mine
        rule_id, target_id = made.json()["rule_id"], created.json()["target_id"]
        assert (await api.delete(f"/api/v1/alert-rules/{rule_id}")).status_code == 204
        assert (await api.delete(f"/api/v1/alert-rules/{rule_id}")).status_code == 404
        assert (await api.delete(f"/api/v1/alert-targets/{target_id}")).status_code == 204
        missing = await api.put(f"/api/v1/alert-rules/{rule_id}", json=rule)
        assert missing.status_code == 404


async def test_an_alert_is_acknowledged_once_with_who_and_the_note(
    collector: RunningCollector, conn: psycopg.AsyncConnection
) -> None:
    cur = await conn.execute(
        "insert into alerts (kind, subject, summary) values ('test_signal', %s, 'x')"
        " returning alert_id",
        (uuid.uuid4().hex,),
    )
    row = await cur.fetchone()
    assert row is not None
    path = f"/api/v1/alerts/{row[0]}/acknowledge"
    async with collector.client(Role.quality) as api:
        done = await api.post(path, json={"note": "line 2 checked, probe replaced"})
        assert done.status_code == 200, done.text
        assert done.json()["acknowledged_by"] == f"test-{os.getpid()}-quality"
        assert done.json()["acknowledge_note"] == "line 2 checked, probe replaced"
        twice = await api.post(path, json={})
        assert twice.status_code == 409
        assert "acknowledged already" in twice.text
        open_ones = await api.get("/api/v1/alerts", params={"state": "unacknowledged"})
        assert row[0] not in {a["alert_id"] for a in open_ones.json()}
        naive = await api.get("/api/v1/alerts", params={"since": "2026-01-01T00:00:00"})
        assert naive.status_code == 422
