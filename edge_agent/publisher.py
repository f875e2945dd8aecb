"""Sends the outbox to the broker in order, few records per message, and applies acks.

Records leave the outbox only when the collector's ack says they are committed. What was
sent but not acknowledged within the ack timeout, or when the connection dropped, is sent
again; the collector recognises the resend by (edge, stream, epoch, seq).

Anyone who can publish on the ack topic could otherwise empty the outbox, so an ack counts
only for a message this edge sent and still awaits: its stream, its epoch and exactly its
range. Every other ack (malformed, retained, for another edge, epoch or range) is counted
per reason, logged once per reason, and changes nothing.

Collectors keep nothing they have not committed: when one goes offline (its status on
trace/v1/collectors/<id>/status, or its will when its connection dies), whatever it held of
this edge's messages is gone with its session. The edge does not know which collector of
the shared group held which message, so it sends everything in flight again at once, to
the living, instead of waiting for the ack timeout; what was committed already comes back
as a duplicate ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt
from pydantic import ValidationError

from edge_agent.ack_timeout import AckTimeout
from edge_agent.cancellation import honour_cancel
from edge_agent.outbox import Outbox
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import CONTRACT, Ack, CollectorStatus, EdgeStatus

log = logging.getLogger(__name__)


# Messages sent and not yet acknowledged, at most: enough to keep a collector's groups full
# across the round trip to the ack, few enough that a resend after the ack timeout is small.
MAX_INFLIGHT_MESSAGES = 50


@dataclass
class PublisherHealth:
    connected: bool = False
    messages_sent: int = 0
    records_sent: int = 0
    records_acked: int = 0
    resends: int = 0
    last_ack_at: datetime | None = None
    last_error: str | None = None
    records_quarantined: int = 0  # acked as refused: moved to the outbox's quarantine
    # Acks that changed nothing, per reason (see IGNORED_ACK).
    acks_ignored: dict[str, int] = field(default_factory=dict)
    # Collectors seen going offline, on which what was in flight was sent again at once.
    collectors_offline: int = 0
    collector_status_ignored: int = 0  # unreadable collector status messages


# Why an ack was ignored, and what to look at: the first of each reason is logged.
IGNORED_ACK: dict[str, str] = {
    "not_utf8": "the payload is not UTF-8 text",
    "not_json": "the payload is not JSON",
    "invalid": "the payload is not a trace.v1 ack (a field missing, of the wrong type, or "
    "out of range)",
    "retained": "it was retained by the broker: collectors never retain acks, so someone "
    "published it by hand; clear it with an empty retained message on the topic",
    "other_edge": "it names another edge",
    "other_epoch": "it names an epoch this edge's outbox does not have",
    "overlapping_range": "its range overlaps a message in flight without being exactly it",
    "unknown_range": "no message with this range is in flight (a late ack after a resend, "
    "or a forgery)",
}
# Reasons a working collector never causes: they raise an alarm in the edge's status.
SUSPICIOUS_ACKS = frozenset(IGNORED_ACK) - {"unknown_range"}


@dataclass
class _InFlight:
    stream: str
    first_seq: int
    last_seq: int
    epoch: str
    resent: bool = False  # sent before (its round trip is not sampled)
    sent_at: float = field(default_factory=time.monotonic)


def envelope_payload(edge_id: str, stream: str, epoch: str, bodies: list[str]) -> str:
    """The Envelope's JSON, assembled from the records' stored JSON without re-encoding it
    (the collector validates every field on arrival)."""
    head = json.dumps(
        {"contract": CONTRACT, "edge_id": edge_id, "stream": stream, "epoch": epoch},
        separators=(",", ":"),
    )
    return head[:-1] + ',"records":[' + ",".join(bodies) + "]}"


@dataclass(frozen=True)
class Subscription:
    """A topic the edge reads on the publisher's connection besides its acks (the broker
    allows one connection per identity): each message of it goes to `on_message`; a
    refused subscription to `on_refused` with the reason, and data and acks go on."""

    topic: str
    on_message: Callable[[object], None]
    on_refused: Callable[[str], None] | None = None


class Publisher:
    def __init__(
        self,
        edge_id: str,
        outbox: Outbox,
        broker: BrokerSettings,
        wake: asyncio.Event,
        max_records: int = 500,
        linger_s: float = 0.2,
        ack_timeout_s: float = 10.0,
        max_inflight_messages: int = MAX_INFLIGHT_MESSAGES,
        status: Callable[[], EdgeStatus] | None = None,
        status_interval_s: float = 10.0,
        subscriptions: Sequence[Subscription] = (),
    ) -> None:
        self.edge_id = edge_id
        self.subscriptions = tuple(subscriptions)
        self.outbox = outbox
        self.broker = broker
        self.wake = wake
        self.max_records = max_records
        self.linger_s = linger_s
        self.ack_timeout_s = ack_timeout_s
        self.ack_timeout = AckTimeout(ack_timeout_s)
        # Per stream and epoch, the last sequence number sent: anything taken at or below it
        # is a resend.
        self._sent_through: dict[tuple[str, str], int] = {}
        self.max_inflight = max_inflight_messages
        self.status = status
        self.status_interval_s = status_interval_s
        self.health = PublisherHealth()
        # Answers to what a collector asked (probe results): QoS 1 on this connection, sent
        # in order; a few wait across a reconnect, more are refused to the asker.
        self._replies: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=16)
        self._inflight: dict[tuple[str, int], _InFlight] = {}
        # Per stream, when the collectors last acknowledged its oldest message in flight:
        # the ack wait of the message behind it runs from then (see _expire_inflight).
        self._progress: dict[str, float] = {}
        self._acked = asyncio.Event()

    async def run(self) -> None:
        delay = 0.5
        while True:
            session = datetime.now(UTC)
            try:
                async with aiomqtt.Client(
                    **self.broker.client_args(),  # type: ignore[arg-type]
                    identifier=self.edge_id,  # the broker uses the identity's name anyway
                    protocol=aiomqtt.ProtocolVersion.V5,
                    will=aiomqtt.Will(
                        topics.status(self.edge_id), self._offline(session), qos=1, retain=True
                    ),
                ) as client:
                    await client.subscribe(topics.ack(self.edge_id), qos=1)
                    await client.subscribe(topics.all_collector_status(), qos=1)
                    for sub in self.subscriptions:
                        await self._subscribe(client, sub)
                    self.health.connected = True
                    delay = 0.5
                    self._resend_all()
                    try:
                        async with asyncio.TaskGroup() as group:
                            group.create_task(self._send_loop(client))
                            group.create_task(self._ack_loop(client))
                            group.create_task(self._reply_loop(client))
                            if self.status is not None:
                                group.create_task(self._status_loop(client, session))
                    except asyncio.CancelledError:
                        await self._say_offline(client, session)
                        raise
            except* aiomqtt.MqttError as errors:
                self.health.last_error = str(errors.exceptions[0])
                log.warning(
                    "broker unavailable (%s); reconnecting in %.1fs", self.health.last_error, delay
                )
            self.health.connected = False
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 30.0)

    def _offline(self, session: datetime) -> str:
        return EdgeStatus(
            edge_id=self.edge_id, state="offline", time=session, session=session
        ).model_dump_json(exclude_none=True)

    async def _say_offline(self, client: aiomqtt.Client, session: datetime) -> None:
        """A stop of the agent: say offline as the will would (a clean disconnect drops the
        will), so a stopped edge is not shown online until its status goes stale."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(2):
                await client.publish(
                    topics.status(self.edge_id), self._offline(session), qos=1, retain=True
                )

    async def _status_loop(self, client: aiomqtt.Client, session: datetime) -> None:
        """The status, refreshed; it names the connection whose will would replace it."""
        assert self.status is not None
        interval_s = min(self.status_interval_s, 86_400.0)
        while True:
            status = self.status().model_copy(update={"session": session, "interval_s": interval_s})
            await client.publish(
                topics.status(self.edge_id),
                status.model_dump_json(exclude_none=True),
                qos=1,
                retain=True,
            )
            honour_cancel()
            await asyncio.sleep(self.status_interval_s)

    def _resend_all(self) -> None:
        """After a (re)connect nothing in flight can be trusted to arrive: send it again,
        with what is captured from now on ahead of the backlog."""
        self._inflight.clear()
        for stream in self.outbox.streams():
            self.outbox.requeue(stream)
        self.health.resends += 1

    async def _send_loop(self, client: aiomqtt.Client) -> None:
        while True:
            self._expire_inflight()
            sent = False
            for stream in self.outbox.streams():
                while len(self._inflight) < self.max_inflight:
                    records = self.outbox.take(stream, self.max_records)
                    if not records:
                        break
                    first_seq, last_seq = records[0][0], records[-1][0]
                    payload = envelope_payload(
                        self.edge_id, stream, self.outbox.epoch, [body for _, body in records]
                    )
                    through = (stream, self.outbox.epoch)
                    sent_through = self._sent_through.get(through, -1)
                    self._inflight[(stream, first_seq)] = _InFlight(
                        stream,
                        first_seq,
                        last_seq,
                        self.outbox.epoch,
                        resent=first_seq <= sent_through,
                    )
                    self._sent_through[through] = max(sent_through, last_seq)
                    await client.publish(topics.data(self.edge_id, stream), payload, qos=1)
                    honour_cancel()
                    self.health.messages_sent += 1
                    self.health.records_sent += len(records)
                    sent = True
            if sent:
                continue
            # Idle or window full: wait for new records, an ack, or the ack timeout.
            self.wake.clear()
            self._acked.clear()
            waiters = [
                asyncio.ensure_future(self.wake.wait()),
                asyncio.ensure_future(self._acked.wait()),
            ]
            await asyncio.wait(
                waiters, timeout=min(1.0, self.ack_timeout_s), return_when=asyncio.FIRST_COMPLETED
            )
            for w in waiters:
                w.cancel()
            if self.wake.is_set() and self.linger_s:
                await asyncio.sleep(self.linger_s)  # let a few more records join the message

    def _expire_inflight(self) -> None:
        """Send a stream's messages in flight again when its oldest has waited the ack
        timeout: from its sending, or from the ack of the message before it, whichever
        came later (TCP restarts its retransmission timer on every ack of new data, RFC
        6298 5.3). A queue in front of the collectors makes every round trip long, however
        long the timeout, when a fleet drains a backlog; but while they acknowledge a
        stream's messages in order, nothing of it is lost and sending it again would only
        lengthen the queue. A message a dead collector holds gets no such ack, and is sent
        again a timeout after the one before it was acknowledged."""
        now = time.monotonic()
        wait_s = self.ack_timeout.seconds
        oldest: dict[str, _InFlight] = {}
        for flight in self._inflight.values():
            held = oldest.get(flight.stream)
            if held is None or flight.first_seq < held.first_seq:
                oldest[flight.stream] = flight
        expired = [
            stream
            for stream, flight in oldest.items()
            if self.ack_timeout.overdue(flight.sent_at, self._progress.get(stream), now)
        ]
        if expired:
            self.ack_timeout.timed_out()
        for stream in expired:
            log.warning("no ack for %s within %.1fs: sending again", stream, wait_s)
            for key in [k for k, f in self._inflight.items() if f.stream == stream]:
                del self._inflight[key]
            self.outbox.requeue(stream)
            self.health.resends += 1

    def reply(self, topic: str, payload: str) -> bool:
        """Queue an answer for the broker; False when too many wait (the asker times out)."""
        try:
            self._replies.put_nowait((topic, payload))
        except asyncio.QueueFull:
            return False
        return True

    async def _reply_loop(self, client: aiomqtt.Client) -> None:
        while True:
            topic, payload = await self._replies.get()
            await client.publish(topic, payload, qos=1)
            honour_cancel()

    async def _subscribe(self, client: aiomqtt.Client, sub: Subscription) -> None:
        granted = await client.subscribe(sub.topic, qos=1)
        if sub.on_refused is not None and any(_refused(c) for c in (granted or [])):
            sub.on_refused(
                f"the broker refused the subscription to {sub.topic}: its ACL must let edges "
                "read it (`tracectl broker files` renders it from the registry)"
            )

    async def _ack_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            sub = next((s for s in self.subscriptions if message.topic.matches(s.topic)), None)
            if sub is not None:
                sub.on_message(message.payload)
            elif topics.is_collector_status(str(message.topic)):
                self.on_collector_status(message.payload, retained=bool(message.retain))
            else:
                self.on_ack(message.payload, retained=bool(message.retain))

    def on_collector_status(self, payload: object, retained: bool = False) -> None:
        """A collector's status: when one goes offline, send what is in flight again now.
        A retained status is history (everything in flight was sent again on connecting)."""
        if retained:
            return
        try:
            text = payload if isinstance(payload, str | bytes | bytearray) else str(payload)
            status = CollectorStatus.model_validate_json(text, strict=True)
        except ValidationError as err:
            self.health.collector_status_ignored += 1
            if self.health.collector_status_ignored == 1:
                log.warning(
                    "ignoring a collector status that is not a trace.v1 status (%s); further "
                    "ones are only counted (status: publisher.collector_status_ignored)",
                    err.errors(include_url=False)[0]["msg"],
                )
            return
        if status.state != "offline":
            # A collector joined: after an outage, the wait must not stay backed off.
            self.ack_timeout.collector_joined()
            return
        self.health.collectors_offline += 1
        streams = sorted({f.stream for f in self._inflight.values()})
        if not streams:
            return
        log.warning(
            "collector %s went offline: sending again what it may have held (%s)",
            status.collector_id,
            ", ".join(streams),
        )
        for stream in streams:
            for key in [k for k, f in self._inflight.items() if f.stream == stream]:
                del self._inflight[key]
            self.outbox.requeue(stream)
        self.health.resends += 1
        self._acked.set()  # wake the send loop: the window is free

    def on_ack(self, payload: object, retained: bool = False) -> None:
        """Apply one message of the ack topic, or count and log why it changes nothing.
        Nothing in it can raise: an ack is outside input."""
        if retained:
            self._ignore("retained", f"{str(payload)[:200]}")
            return
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode("utf-8", "replace")
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            self._ignore("not_utf8", f"{len(payload)} bytes")
            return
        try:
            # Strict: a number sent as a string is the wrong type, not a number.
            ack = Ack.model_validate_json(text, strict=True)
        except ValidationError as err:
            unparsed = any(e["type"] == "json_invalid" for e in err.errors())
            reason = "not_json" if unparsed else "invalid"
            self._ignore(reason, f"{err.errors(include_url=False)[0]['msg']}: {text[:200]!r}")
            return
        what = f"{ack.edge_id} {ack.stream} epoch {ack.epoch} {ack.first_seq}..{ack.last_seq}"
        if ack.edge_id != self.edge_id:
            self._ignore("other_edge", what)
            return
        if ack.epoch != self.outbox.epoch:
            self._ignore("other_epoch", what)
            return
        flight = self._inflight.get((ack.stream, ack.first_seq))
        if flight is None or flight.last_seq != ack.last_seq or flight.epoch != ack.epoch:
            overlaps = any(
                f.stream == ack.stream
                and f.first_seq <= ack.last_seq
                and ack.first_seq <= f.last_seq
                for f in self._inflight.values()
            )
            self._ignore("overlapping_range" if overlaps else "unknown_range", what)
            return
        if ack.refused is not None:
            runs = [(r.first_seq, r.last_seq, r.reason) for r in ack.refusals]
            moved = self.outbox.quarantine(
                ack.stream, ack.epoch, ack.first_seq, ack.last_seq, ack.refused, runs
            )
            self.health.records_quarantined += moved
            self.health.records_acked += ack.last_seq - ack.first_seq + 1 - moved
        else:
            self.health.records_acked += self.outbox.accept(
                ack.stream, ack.epoch, ack.first_seq, ack.last_seq
            )
        del self._inflight[(ack.stream, ack.first_seq)]
        behind = (f.first_seq for f in self._inflight.values() if f.stream == ack.stream)
        if all(first > flight.first_seq for first in behind):
            self._progress[ack.stream] = time.monotonic()  # its oldest: the stream moves on
        if not flight.resent:
            self.ack_timeout.acknowledged(time.monotonic() - flight.sent_at)
        self.health.last_ack_at = datetime.now(UTC)
        self._acked.set()

    def _ignore(self, reason: str, what: str) -> None:
        seen = self.health.acks_ignored.get(reason, 0)
        self.health.acks_ignored[reason] = seen + 1
        if seen == 0:  # once per reason: a flood of forged acks must not flood the log
            log.warning(
                "ignoring an ack on %s: %s (%s); further acks ignored for this reason are "
                "only counted (status: publisher.acks_ignored)",
                topics.ack(self.edge_id),
                IGNORED_ACK[reason],
                what,
            )

    def alarms(self) -> list[str]:
        """What the edge's status should raise about acks."""
        suspicious = {
            r: n for r, n in sorted(self.health.acks_ignored.items()) if r in SUSPICIOUS_ACKS
        }
        if not suspicious:
            return []
        counts = ", ".join(f"{n} {r}" for r, n in suspicious.items())
        return [
            f"acks ignored that no collector sends ({counts}): someone may be publishing on "
            f"{topics.ack(self.edge_id)}; check the broker's ACL"
        ]


def _refused(code: object) -> bool:
    """A SUBACK reason code of failure (MQTT v5 ReasonCode, or a v3 granted QoS 0x80)."""
    if isinstance(code, int):
        return code >= 0x80
    return bool(getattr(code, "is_failure", False))
