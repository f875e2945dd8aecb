"""Delivering alerts: the durable queue and the collector task that sends it.

**Queue.** `alert_deliveries` holds one row per alert and target, written by a trigger in
the transaction that raises the alert (migration 0030): nothing is raised without its
deliveries, and a collector's restart loses none. The trigger's NOTIFY wakes the senders.

**Sending.** Each collector runs `keep_delivering`. It takes due rows with `for update skip
locked` (several collectors share the queue, none sends a row another holds), counts the
attempt and leases the row for the attempt's timeout plus LEASE_MARGIN_S (a collector that
dies mid-attempt leaves it to be taken again then), and sends each in a task of its own:
at most TRACE_ALERTS_IN_FLIGHT at once and TRACE_ALERTS_IN_FLIGHT_PER_TARGET per target,
so a slow or failing endpoint holds only its own share and never delays the others. Ingest
never waits on any of it: it only wrote rows.

**Outcome.** A webhook answering 2xx, or an SMTP server taking the message: delivered.
Anything else (another status, a refused connection, a timeout): tried again after
TRACE_ALERTS_BACKOFF_S * 2^(attempt-1) (at most TRACE_ALERTS_BACKOFF_MAX_S, with jitter),
and after the target's max_attempts the row is `dead`: a dead letter, listed with its last
error and redeliverable (`redeliver`).

**Webhook.** POST of a JSON body `{"delivery_id", "attempt", "alert"}` with headers
`X-Trace-Alert-Timestamp` (Unix seconds) and `X-Trace-Alert-Signature`
(`sha256=` + hex HMAC-SHA256 of `{timestamp}.{body}` with the target's secret). A
receiver recomputes it, refuses a timestamp far from its clock (a replay) and uses
`X-Trace-Alert-Delivery` to drop a delivery it has had (an attempt whose answer was lost is
sent again: at least once).

**E-mail.** Through TRACE_SMTP_HOST; a collector without one leaves e-mail rows to one that
has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import random
import smtplib
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Literal

import httpx
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from cloud_collector.alerts import raised
from cloud_collector.settings import CollectorSettings
from protocols.strict import Strict

log = logging.getLogger(__name__)

CHANNEL = "alert_deliveries"  # the NOTIFY channel of migration 0030's trigger
TIMESTAMP_HEADER = "X-Trace-Alert-Timestamp"
SIGNATURE_HEADER = "X-Trace-Alert-Signature"
DELIVERY_HEADER = "X-Trace-Alert-Delivery"
# Retries come due without a notification: the queue is looked at this often anyway.
POLL_S = 1.0
LEASE_MARGIN_S = 5.0
_ERROR_CHARS = 500
_ANSWER_BYTES = 200  # of a refusing endpoint's answer, kept as the error

DeliveryState = Literal["pending", "delivered", "dead"]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The value of X-Trace-Alert-Signature for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_s(attempts: int, base: float, cap: float) -> float:
    """The wait after the `attempts`-th failed attempt: doubling, capped, with jitter (half
    to all of it), so that many deliveries failing together do not retry together."""
    wait: float = min(base * 2.0 ** min(attempts - 1, 60), cap)
    return wait * (0.5 + random.random() / 2)


class Delivery(Strict):
    delivery_id: int
    alert_id: int
    alert_kind: str
    target_id: int
    target_name: str
    state: DeliveryState
    attempts: int
    max_attempts: int
    next_attempt_at: datetime  # pending: when it is tried next
    last_attempt_at: datetime | None
    last_status: int | None  # the webhook's HTTP status, or the SMTP reply code
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


_COLUMNS = """d.delivery_id, d.alert_id, a.kind as alert_kind, d.target_id,
t.name as target_name, d.state, d.attempts, d.max_attempts, d.next_attempt_at,
d.last_attempt_at, d.last_status, d.last_error, d.delivered_at, d.created_at"""
_LIST = f"""
select {_COLUMNS} from alert_deliveries d join alerts a using (alert_id)
join alert_targets t using (target_id)
where (%(state)s::text is null or d.state = %(state)s)
  and (%(target)s::bigint is null or d.target_id = %(target)s)
  and (%(alert)s::bigint is null or d.alert_id = %(alert)s)
order by d.created_at desc, d.delivery_id desc limit %(limit)s
"""
_REDELIVER = """
update alert_deliveries set state = 'pending', attempts = 0, next_attempt_at = now(),
    delivered_at = null
where delivery_id = %(delivery)s and state <> 'pending'
returning delivery_id
"""
_STATE_OF = "select state from alert_deliveries where delivery_id = %(delivery)s"

# Due rows, at most `per_target` of each target not already at its share in this process.
_CLAIM = """
with due as (
    select delivery_id from (
        select d.delivery_id, d.next_attempt_at, row_number() over (
                   partition by d.target_id order by d.next_attempt_at, d.delivery_id) as n
        from alert_deliveries d join alert_targets t using (target_id)
        where d.state = 'pending' and d.next_attempt_at <= now()
          and t.channel = any(%(channels)s) and not (d.target_id = any(%(busy)s))
    ) x
    where n <= %(per_target)s order by next_attempt_at limit %(limit)s
),
taken as (
    select delivery_id from alert_deliveries
    where delivery_id in (select delivery_id from due)
      and state = 'pending' and next_attempt_at <= now()
    for update skip locked
)
update alert_deliveries d set attempts = d.attempts + 1, last_attempt_at = now(),
    next_attempt_at = now() + make_interval(secs => %(lease)s)
from taken t join alert_targets g on true
where d.delivery_id = t.delivery_id and g.target_id = d.target_id
returning d.delivery_id, d.alert_id, d.attempts, d.max_attempts, d.target_id, g.name,
    g.channel, g.url, g.secret, g.email_to
"""
_RECORD = """
update alert_deliveries set
    state = case when %(ok)s then 'delivered'
                 when attempts >= max_attempts then 'dead' else 'pending' end,
    delivered_at = case when %(ok)s then now() end,
    last_status = %(status)s,
    last_error = %(error)s,
    next_attempt_at = case when %(ok)s then next_attempt_at
                           else now() + make_interval(secs => %(backoff)s) end
where delivery_id = %(delivery)s and state = 'pending'
returning state
"""


async def deliveries(
    conn: AsyncConnection,
    state: DeliveryState | None = None,
    target_id: int | None = None,
    alert_id: int | None = None,
    limit: int = 1000,
) -> list[Delivery]:
    """Deliveries, newest first (`state=dead`: the dead letters)."""
    cur = conn.cursor(row_factory=dict_row)
    params = {"state": state, "target": target_id, "alert": alert_id, "limit": limit}
    return [Delivery(**r) for r in await (await cur.execute(_LIST, params)).fetchall()]


class StillPending(Exception):
    pass


async def redeliver(conn: AsyncConnection, delivery_id: int) -> bool:
    """Send a dead (or delivered) delivery again from its first attempt; False if there is
    no such delivery, StillPending if it waits to be sent anyway."""
    async with conn.transaction():
        done = await (await conn.execute(_REDELIVER, {"delivery": delivery_id})).fetchone()
        if done is None:
            row = await (await conn.execute(_STATE_OF, {"delivery": delivery_id})).fetchone()
            if row is None:
                return False
            raise StillPending(f"delivery {delivery_id} is waiting to be sent already")
        await conn.execute(f"notify {CHANNEL}")
    return True


# ---- the sender ----------------------------------------------------------------------


@dataclass
class _Claim:
    delivery_id: int
    alert_id: int
    attempts: int
    max_attempts: int
    target_id: int
    name: str
    channel: str
    url: str | None
    secret: str | None
    email_to: list[str] | None


@dataclass
class _Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None


@dataclass
class SenderState:
    """What the sender of this process did, for tests and the log."""

    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    in_flight: int = 0
    last_error: str | None = None
    by_target: dict[int, int] = field(default_factory=dict)  # attempts in flight


def channels(settings: CollectorSettings) -> list[str]:
    """The channels this collector can send: e-mail only with an SMTP server."""
    return ["webhook", "email"] if settings.smtp_host else ["webhook"]


def _body(claim: _Claim, alert: raised.Alert) -> bytes:
    message = {
        "delivery_id": claim.delivery_id,
        "attempt": claim.attempts,
        "alert": alert.model_dump(mode="json"),
    }
    return json.dumps(message, separators=(",", ":")).encode()


async def _webhook(http: httpx.AsyncClient, claim: _Claim, alert: raised.Alert) -> _Outcome:
    assert claim.url is not None and claim.secret is not None  # the table's check
    body = _body(claim, alert)
    now = int(time.time())
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(now),
        SIGNATURE_HEADER: signature(claim.secret, now, body),
        DELIVERY_HEADER: str(claim.delivery_id),
    }
    try:
        # Streamed: of a refusal only its first bytes are read (an endpoint may answer
        # anything, of any length); redirects are not followed (a 3xx is a failure).
        async with http.stream("POST", claim.url, content=body, headers=headers) as answer:
            if 200 <= answer.status_code < 300:
                return _Outcome(True, answer.status_code)
            head = b""
            async for chunk in answer.aiter_bytes():
                head += chunk
                if len(head) >= _ANSWER_BYTES:
                    break
    except httpx.HTTPError as err:
        return _Outcome(False, None, f"{type(err).__name__}: {err}")
    text = _one_line(head[:_ANSWER_BYTES].decode("utf-8", "replace"))
    return _Outcome(False, answer.status_code, f"HTTP {answer.status_code}: {text}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _email(settings: CollectorSettings, claim: _Claim, alert: raised.Alert) -> EmailMessage:
    message = EmailMessage()
    about = alert.summary or alert.subject or alert.event_id or ""
    message["Subject"] = _one_line(f"[trace alert] {alert.kind}: {about}")[:200]
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(claim.email_to or [])
    message["X-Trace-Alert-Delivery"] = str(claim.delivery_id)
    lines = [
        f"{alert.kind} alert {alert.alert_id}, raised {alert.raised_at.isoformat()}",
        about,
        "",
        json.dumps(alert.model_dump(mode="json"), indent=2),
    ]
    message.set_content("\n".join(lines))
    return message


def _send_mail(settings: CollectorSettings, message: EmailMessage, to: list[str]) -> None:
    assert settings.smtp_host is not None  # only channels() lets e-mail be claimed
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=settings.alerts_delivery_timeout_s
    ) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        smtp.send_message(message, to_addrs=to)


async def _mail(settings: CollectorSettings, claim: _Claim, alert: raised.Alert) -> _Outcome:
    try:
        message = _email(settings, claim, alert)
        await asyncio.to_thread(_send_mail, settings, message, claim.email_to or [])
    except smtplib.SMTPResponseException as err:
        return _Outcome(False, err.smtp_code, f"SMTP {err.smtp_code}: {err.smtp_error!r}")
    except (OSError, smtplib.SMTPException, ValueError) as err:
        return _Outcome(False, None, f"{type(err).__name__}: {err}")
    return _Outcome(True, 250)


async def _attempt(
    settings: CollectorSettings, http: httpx.AsyncClient, claim: _Claim, alert: raised.Alert
) -> _Outcome:
    send = (
        _webhook(http, claim, alert)
        if claim.channel == "webhook"
        else _mail(settings, claim, alert)
    )
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that comes
        # with the answer, and a stopping collector would wait for ever.
        async with asyncio.timeout(settings.alerts_delivery_timeout_s):
            return await send
    except TimeoutError:
        return _Outcome(
            False,
            None,
            f"no answer within {settings.alerts_delivery_timeout_s:g}s "
            "(TRACE_ALERTS_DELIVERY_TIMEOUT_S)",
        )


async def _send(
    settings: CollectorSettings,
    conn: AsyncConnection,
    http: httpx.AsyncClient,
    claim: _Claim,
    alert: raised.Alert,
    state: SenderState,
) -> None:
    outcome = await _attempt(settings, http, claim, alert)
    state.attempts += 1
    wait = backoff_s(claim.attempts, settings.alerts_backoff_s, settings.alerts_backoff_max_s)
    params = {
        "ok": outcome.ok,
        "status": outcome.status,
        "error": None if outcome.error is None else outcome.error[:_ERROR_CHARS],
        "backoff": wait,
        "delivery": claim.delivery_id,
    }
    row = await (await conn.execute(_RECORD, params)).fetchone()
    if outcome.ok:
        state.delivered += 1
        return
    state.failed += 1
    state.last_error = f"{claim.name}: {outcome.error}"
    if row is not None and row[0] == "dead":
        state.dead += 1
        log.error(
            "alerts: delivery %d of alert %d to %s dead after %d attempts (%s); "
            "POST /api/v1/alert-deliveries/%d/redeliver sends it again",
            claim.delivery_id,
            claim.alert_id,
            claim.name,
            claim.attempts,
            outcome.error,
            claim.delivery_id,
        )
    else:
        log.warning(
            "alerts: delivery %d to %s failed (attempt %d of %d: %s); again in %.1fs",
            claim.delivery_id,
            claim.name,
            claim.attempts,
            claim.max_attempts,
            outcome.error,
            wait,
        )


async def _claim(
    conn: AsyncConnection, settings: CollectorSettings, state: SenderState, free: int
) -> list[_Claim]:
    cap = settings.alerts_in_flight_per_target
    params: dict[str, Any] = {
        "channels": channels(settings),
        "busy": [t for t, n in state.by_target.items() if n >= cap],
        "per_target": cap,
        "limit": free,
        "lease": settings.alerts_delivery_timeout_s + LEASE_MARGIN_S,
    }
    rows = await (await conn.execute(_CLAIM, params)).fetchall()
    return [_Claim(*row) for row in rows]


async def _listen(listener: AsyncConnection, wake: asyncio.Event) -> None:
    async for _ in listener.notifies():
        wake.set()


async def _deliver(settings: CollectorSettings, state: SenderState) -> None:
    url = settings.database_url
    tasks: set[asyncio.Task[None]] = set()
    wake = asyncio.Event()
    async with (
        await AsyncConnection.connect(url, autocommit=True) as conn,
        await AsyncConnection.connect(url, autocommit=True) as listener,
        httpx.AsyncClient(timeout=settings.alerts_delivery_timeout_s) as http,
    ):
        await listener.execute(f"listen {CHANNEL}")
        listening = asyncio.create_task(_listen(listener, wake))

        def done(task: asyncio.Task[None], *, target: int) -> None:
            tasks.discard(task)
            state.by_target[target] -= 1
            state.in_flight = len(tasks)
            wake.set()
            if not task.cancelled() and task.exception() is not None:
                state.last_error = f"sending failed: {task.exception()!r}"
                log.error("alerts: a delivery failed", exc_info=task.exception())

        try:
            while True:
                if listening.done():
                    listening.result()  # the listener's connection is lost: reconnect
                    raise psycopg.OperationalError("the notification listener ended")
                wake.clear()
                free = settings.alerts_in_flight - len(tasks)
                claims = await _claim(conn, settings, state, free) if free > 0 else []
                alerts = await raised.by_id(conn, [c.alert_id for c in claims]) if claims else {}
                for claim in claims:
                    alert = alerts.get(claim.alert_id)
                    if alert is None:  # deleted meanwhile (its event's retention): so is it
                        continue
                    task = asyncio.create_task(_send(settings, conn, http, claim, alert, state))
                    tasks.add(task)
                    state.by_target[claim.target_id] = state.by_target.get(claim.target_id, 0) + 1
                    task.add_done_callback(functools.partial(done, target=claim.target_id))
                state.in_flight = len(tasks)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):  # not wait_for: see _attempt
                        await wake.wait()
        finally:
            listening.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(listening, *tasks, return_exceptions=True)


async def keep_delivering(settings: CollectorSettings, state: SenderState | None = None) -> None:
    """Send the queue until cancelled; a lost database is reconnected with backoff (an
    attempt cut short is taken again when its lease ends)."""
    state = state or SenderState()
    delay = 0.5
    while True:
        started = time.monotonic()
        try:
            await _deliver(settings, state)
        except (psycopg.OperationalError, psycopg.InterfaceError) as err:
            state.last_error = f"database: {err}"
            log.warning("alerts: database unavailable (%s); sending again in %.1fs", err, delay)
        if time.monotonic() - started > 60:
            delay = 0.5
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 30.0)
