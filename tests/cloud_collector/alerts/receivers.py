"""Real receivers of alerts, in-process: an HTTP server answering webhooks as a test
scripts it (uvicorn, on a free port) and an SMTP server (aiosmtpd) keeping what it gets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller

from tests.conftest import free_port

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def signed_by(self, secret: str, max_skew_s: float = 300) -> bool:
        """What a receiver checks: the HMAC of `{timestamp}.{body}` and a fresh timestamp."""
        timestamp = self.headers["x-trace-alert-timestamp"]
        if abs(time.time() - int(timestamp)) > max_skew_s:
            return False
        want = hmac.new(secret.encode(), f"{timestamp}.".encode() + self.body, hashlib.sha256)
        return hmac.compare_digest(
            self.headers["x-trace-alert-signature"], f"sha256={want.hexdigest()}"
        )


@dataclass
class WebhookReceiver:
    """Answers POST /<path> with the next status scripted for that path (then the last one
    again); a path in `held` waits until its event is set before answering (all are set
    when the receiver stops: a server stops after its requests are answered)."""

    url: str
    statuses: dict[str, list[int]] = field(default_factory=dict)
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"].lstrip("/")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(path, headers, body, time.monotonic()))
        if path in self.held:
            await self.held[path].wait()
        script = self.statuses.get(path, [200])
        status = script.pop(0) if len(script) > 1 else script[0]
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status < 300 else b"no"})


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    port = free_port()
    receiver = WebhookReceiver(f"http://127.0.0.1:{port}")
    server = uvicorn.Server(
        uvicorn.Config(receiver, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
    try:
        yield receiver
    finally:
        for event in receiver.held.values():
            event.set()
        server.should_exit = True
        await task


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[tuple[list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def smtp_server() -> Any:
    port = free_port()
    mailbox = Mailbox("127.0.0.1", port)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
