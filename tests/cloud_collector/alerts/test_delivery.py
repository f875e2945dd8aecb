"""Alerts reach their targets: real webhook receivers and a real SMTP server in-process, the
collector's sender task against the real database. Each webhook body is signed; a failing
endpoint is retried with growing waits and dead-lettered after its max attempts, then
redelivered on request; a hanging endpoint holds nobody else up; the queue outlives a
sender's stop. Alerts here are of a kind no rule makes, as another part would insert them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from cloud_collector.alerts import delivery
from cloud_collector.auth import Role
from cloud_collector.settings import CollectorSettings
from tests.cloud_collector.alerts.receivers import smtp_server, webhook_receiver
from tests.conftest import RunningCollector, Services, now_true, until

KIND = "test_signal"  # a kind of another part: delivered with no rule of ours
BACKOFF_S = 0.3


@pytest.fixture
async def conn(services: Services) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        yield c


@pytest.fixture
def line() -> str:
    """A line of this test alone: its targets get only its alerts."""
    return f"line-{uuid.uuid4().hex[:8]}"


def sender_settings(collector: RunningCollector, **changes: Any) -> CollectorSettings:
    quick = {"alerts_backoff_s": BACKOFF_S, "alerts_delivery_timeout_s": 60.0, **changes}
    return collector.settings.model_copy(update=quick)


@contextlib.asynccontextmanager
async def sending(settings: CollectorSettings) -> AsyncIterator[delivery.SenderState]:
    """The collector's sender task, running until the block ends (a collector stopping)."""
    state = delivery.SenderState()
    task = asyncio.create_task(delivery.keep_delivering(settings, state))
    try:
        yield state
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def targets(collector: RunningCollector, *bodies: dict) -> AsyncIterator[list[dict]]:
    """Targets made through the API (admin), deleted with their deliveries afterwards."""
    made = []
    async with collector.client(Role.admin) as api:
        try:
            for body in bodies:
                answer = await api.post(
                    "/api/v1/alert-targets", json={"name": f"t-{uuid.uuid4().hex[:8]}", **body}
                )
                assert answer.status_code == 201, answer.text
                made.append(answer.json())
            yield made
        finally:
            for target in made:
                await api.delete(f"/api/v1/alert-targets/{target['target_id']}")


async def raise_alert(conn: psycopg.AsyncConnection, line: str, kind: str = KIND) -> int:
    cur = await conn.execute(
        "insert into alerts (kind, subject, line_id, summary) values (%s, %s, %s, %s)"
        " returning alert_id",
        (kind, uuid.uuid4().hex, line, f"something on {line}"),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def deliveries_of(conn: psycopg.AsyncConnection, alert_id: int) -> dict[int, dict]:
    """The alert's deliveries by target id."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute("select * from alert_deliveries where alert_id = %s", (alert_id,))
    return {r["target_id"]: r for r in await cur.fetchall()}


async def state_is(
    conn: psycopg.AsyncConnection, alert_id: int, target: dict, state: str
) -> dict | None:
    row = (await deliveries_of(conn, alert_id)).get(target["target_id"])
    return row if row is not None and row["state"] == state else None


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    body = b'{"alert":{}}'
    want = hmac.new(b"0123456789abcdef", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert delivery.signature("0123456789abcdef", 1700000000, body) == f"sha256={want}"
    assert delivery.signature("0123456789abcdef", 1700000001, body) != f"sha256={want}"


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [(1, 2.5, 5), (2, 5, 10), (3, 10, 20), (8, 50, 100), (200, 50, 100)],
)
def test_the_wait_doubles_with_each_failure_up_to_the_cap(
    attempts: int, low: float, high: float
) -> None:
    waits = [delivery.backoff_s(attempts, base=5, cap=100) for _ in range(200)]
    assert all(low <= w <= high for w in waits)


async def test_a_webhook_gets_the_alert_signed_and_a_failed_attempt_is_retried_with_backoff(
    collector: RunningCollector, conn: psycopg.AsyncConnection, line: str
) -> None:
    async with webhook_receiver() as hooks:
        hooks.statuses["flaky"] = [503, 500, 200]
        body = {"channel": "webhook", "url": f"{hooks.url}/flaky", "lines": [line]}
        async with targets(collector, body) as [flaky]:
            alert_id = await raise_alert(conn, line)
            other_line = await raise_alert(conn, f"{line}-other")
            async with sending(sender_settings(collector)):
                done = await until(
                    lambda: state_is(conn, alert_id, flaky, "delivered"), 60, "delivered"
                )
    received = hooks.at("flaky")
    assert [r.json()["attempt"] for r in received] == [1, 2, 3]
    assert all(r.signed_by(flaky["secret"]) for r in received)
    assert not received[0].signed_by("not-the-secret-of-this-target")
    assert {r.json()["alert"]["alert_id"] for r in received} == {alert_id}
    assert received[0].json()["alert"]["kind"] == KIND
    assert {r.headers["x-trace-alert-delivery"] for r in received} == {str(done["delivery_id"])}
    # Each wait at least half of BACKOFF_S * 2^(n-1) (jitter): lower bounds hold at any load.
    waits = [b.at - a.at for a, b in pairwise(received)]
    assert waits[0] >= BACKOFF_S / 2
    assert waits[1] >= BACKOFF_S
    assert (done["attempts"], done["last_status"], done["last_error"]) == (3, 200, None)
    assert await deliveries_of(conn, other_line) == {}  # another line: not this target's


async def test_a_dead_endpoint_is_dead_lettered_and_a_hanging_one_delays_nobody(
    collector: RunningCollector, conn: psycopg.AsyncConnection, line: str
) -> None:
    async with webhook_receiver() as hooks:
        hooks.statuses["down"] = [500]
        hooks.held["slow"] = asyncio.Event()
        bodies = [
            {"channel": "webhook", "url": f"{hooks.url}/{path}", "lines": [line], "max_attempts": 3}
            for path in ("slow", "down", "fine")
        ]
        async with targets(collector, *bodies) as [slow, down, fine], collector.client() as api:
            alert_id = await raise_alert(conn, line)
            async with sending(sender_settings(collector)):
                await until(lambda: state_is(conn, alert_id, fine, "delivered"), 60, "fine")
                dead = await until(lambda: state_is(conn, alert_id, down, "dead"), 60, "dead")
                # All the while, the slow endpoint has not answered its first attempt.
                assert len(hooks.at("slow")) == 1
                assert await state_is(conn, alert_id, slow, "pending")
                assert len(hooks.at("down")) == 3
                assert dead["last_error"].startswith("HTTP 500")

                listed = await api.get(
                    "/api/v1/alert-deliveries", params={"state": "dead", "alert": alert_id}
                )
                assert [d["target_name"] for d in listed.json()] == [down["name"]]
                pending = await deliveries_of(conn, alert_id)
                busy = await api.post(
                    f"/api/v1/alert-deliveries/{pending[slow['target_id']]['delivery_id']}"
                    "/redeliver"
                )
                assert busy.status_code == 409

                hooks.statuses["down"] = [200]  # the endpoint is fixed: send it again
                again = await api.post(f"/api/v1/alert-deliveries/{dead['delivery_id']}/redeliver")
                assert again.status_code == 202, again.text
                redone = await until(
                    lambda: state_is(conn, alert_id, down, "delivered"), 60, "redelivered"
                )
                assert redone["attempts"] == 1
                hooks.held["slow"].set()
                await until(lambda: state_is(conn, alert_id, slow, "delivered"), 60, "slow")
            missing = await api.post("/api/v1/alert-deliveries/999999999999/redeliver")
            assert missing.status_code == 404


async def test_the_queue_outlives_a_sender_stopped_mid_attempt(
    collector: RunningCollector, conn: psycopg.AsyncConnection, line: str
) -> None:
    async with webhook_receiver() as hooks:
        hooks.held["once"] = asyncio.Event()
        body = {"channel": "webhook", "url": f"{hooks.url}/once", "lines": [line]}
        async with targets(collector, body) as [target]:
            alert_id = await raise_alert(conn, line)  # no sender runs: it waits in the table
            assert await state_is(conn, alert_id, target, "pending")
            settings = sender_settings(collector, alerts_delivery_timeout_s=1.0)
            async with sending(settings):
                await until(lambda: now_true(len(hooks.at("once")) == 1), 30, "first attempt")
            # The collector stopped with the attempt unanswered: the next one sends it
            # again once the attempt's lease is over.
            hooks.held["once"].set()
            async with sending(settings):
                done = await until(
                    lambda: state_is(conn, alert_id, target, "delivered"), 60, "sent again"
                )
    assert done["attempts"] == 2
    assert len(hooks.at("once")) == 2


async def test_an_email_goes_through_the_smtp_server(
    collector: RunningCollector, conn: psycopg.AsyncConnection, line: str
) -> None:
    with smtp_server() as mailbox:
        body = {"channel": "email", "email_to": ["qa@plant.example"], "lines": [line]}
        async with targets(collector, body) as [target]:
            alert_id = await raise_alert(conn, line)
            # Without an SMTP server configured the e-mail waits for a collector with one.
            async with sending(sender_settings(collector)) as idle:
                await asyncio.sleep(0.5)
                assert idle.attempts == 0
            assert await state_is(conn, alert_id, target, "pending")
            settings = sender_settings(
                collector, smtp_host=mailbox.host, smtp_port=mailbox.port, smtp_starttls=False
            )
            async with sending(settings):
                await until(lambda: state_is(conn, alert_id, target, "delivered"), 60, "mailed")
    [(to, message)] = mailbox.messages
    assert to == ["qa@plant.example"]
    assert message["Subject"] == f"[trace alert] {KIND}: something on {line}"
    assert message["X-Trace-Alert-Delivery"] is not None
    assert f'"alert_id": {alert_id}' in message.get_payload()
