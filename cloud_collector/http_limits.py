"""How much a request may send, and how slowly: an ASGI middleware in front of every route.

- **Size.** Each route has a body limit (`BodyLimits.for_path`: EPCIS capture, ERP and QC
  imports, the rest). A declared Content-Length over it is refused before a byte is read;
  otherwise bytes are counted as they arrive (chunked bodies declare nothing, and a
  Content-Length can lie), and the request is refused the moment it passes: 413, naming
  the limit and the setting behind it.
- **Time.** The whole body must arrive within `timeout_s` of the request's start: a client
  trickling its body (a byte a second, or nothing after the headers) gets 408 and its
  connection is closed, so no number of slow clients holds the server's tasks for long.
  The clock stops once the body is complete: a long streamed answer is not cut. Before
  that, the request line and headers must arrive within their own deadline
  (`h11_with_header_deadline`, in the HTTP protocol itself: no ASGI app sees a request
  whose headers are not complete), or a client sending half a header ("slowloris") would
  hold its connection, and with enough of them the server's connection limit, forever.

A refusal replaces whatever the route would have answered to its interrupted read
(FastAPI turns a failed body read into its own 400). The connection is closed after it.
Before a 413 the rest of the body is read and dropped for at most `LINGER_S` seconds and
`LINGER_BYTES` bytes (nginx's "lingering close"): most clients send their whole body before
reading the answer, and would otherwise see a reset connection instead of the 413.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from cloud_collector.epcis.problems import TITLES


@dataclass(frozen=True)
class BodyLimits:
    default_bytes: int
    # (path prefix, bytes, setting), the first matching prefix wins.
    by_prefix: tuple[tuple[str, int, str], ...]
    timeout_s: float
    default_setting: str = "TRACE_API_BODY_BYTES"

    def for_path(self, path: str) -> tuple[int, str]:
        """The body limit of a route and the setting that sets it."""
        for prefix, limit, setting in self.by_prefix:
            if path.startswith(prefix):
                return limit, setting
        return self.default_bytes, self.default_setting


LINGER_S = 5.0
LINGER_BYTES = 64 * 1024 * 1024


class _Refused(Exception):
    """The body broke a limit; the middleware answers (never seen outside it)."""


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit, setting = self.limits.for_path(path)
        too_large = (
            f"the request body is larger than this route's limit of {_size(limit)} "
            f"({limit} bytes, {setting}): send less per request (split the import or the "
            "capture into several)"
        )
        declared = dict(scope["headers"]).get(b"content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > limit
        ):
            await _refuse(send, path, 413, too_large, receive)
            return

        timeout_s = self.limits.timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        received = 0
        body_done = False
        refusal: tuple[int, str] | None = None
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done, refusal
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                refusal = (
                    408,
                    f"the request body did not arrive within {timeout_s:g} s "
                    "(TRACE_API_BODY_TIMEOUT_S): send it at once, or in smaller requests",
                )
                raise _Refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = (413, too_large)
                    raise _Refused
                body_done = not message.get("more_body", False)
            else:
                body_done = True  # http.disconnect: nothing more will come
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None and not started:
                return  # the route's answer to its interrupted read: ours replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # Whatever the route made of the interrupted read (FastAPI: a 400, an
            # ExceptionGroup from a task group) is ours to answer; anything else is not.
            if refusal is None:
                raise
        if refusal is not None and not started:
            status, detail = refusal
            await _refuse(send, path, status, detail, receive if status == 413 else None)


async def _drain(receive: Receive) -> None:
    """Read and drop what is left of a refused body, within LINGER_S and LINGER_BYTES."""
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_S):
            while dropped <= LINGER_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                dropped += len(message.get("body", b""))


async def _refuse(
    send: Send, path: str, status: int, detail: str, linger: Receive | None = None
) -> None:
    if path.startswith("/epcis"):
        # The EPCIS REST binding answers with problem documents (epcis/problems.py).
        kind = (
            "epcisException:CaptureLimitExceededException"
            if status == 413
            else "epcisException:ValidationException"
        )
        body: dict[str, object] = {
            "type": kind,
            "title": TITLES[kind],
            "status": status,
            "detail": detail,
        }
        media_type = b"application/problem+json"
    else:
        body, media_type = {"detail": detail}, b"application/json"
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", media_type),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    if linger is not None:
        await _drain(linger)
    await send({"type": "http.response.body", "body": payload})


def h11_with_header_deadline(timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's line and headers, counted
    from the connection's start or from the first byte of a later request on it: past it,
    408 and the connection is closed. (uvicorn closes idle keep-alive connections, but one
    that has sent part of a request waits for the rest as long as it takes.)"""

    class H11WithHeaderDeadline(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_watching()
            super().connection_lost(exc)

        def _watch_headers(self) -> None:
            # IDLE: no complete request yet on this cycle. The deadline is armed once per
            # request, never pushed back by more bytes: a trickle does not reset it.
            if self.conn.their_state is h11.IDLE:
                if self._header_deadline is None and not self.transport.is_closing():
                    self._header_deadline = self.loop.call_later(timeout_s, self._too_slow)
            else:
                self._stop_watching()

        def _stop_watching(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _too_slow(self) -> None:
            self._header_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
                    b"connection: close\r\ncontent-length: 44\r\n\r\n"
                    b"the request headers did not arrive in time\r\n"
                )
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Idle between requests is the keep-alive timeout's; this deadline starts again
            # with the next request's first byte.
            self._stop_watching()

    return H11WithHeaderDeadline
