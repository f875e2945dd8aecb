"""The fleet: simulated edges that publish readings as a line PC's publisher does and count
them committed only when the collector's ack says so.

Each edge is one line with its tags, polled together (a poll: one reading per tag, one
time). Its records are the message contract's `Reading`s, numbered and wrapped as the edge
agent does (`edge_agent.outbox.numbered`, `edge_agent.publisher.envelope_payload`); the
JSON of each tag is made once from the model and only its sequence number and time are
filled in per reading, so the generator spends its core on the wire, not on pydantic.

Like the edge's publisher, an edge keeps at most `window` messages in flight, publishes
with QoS 1 on its own data topic, reads its ack topic, settles a message only on an ack of
exactly its range, and when its oldest message has waited the ack wait (from its sending or
the ack of the one before it) sends everything in flight again (the collector recognises
the resend). Two ways to load it:

- flat out (`rate` None): the devices are never the limit; a message is made, its
  readings stamped with the time, whenever the window has room;
- offered rate: polls at `rate` readings/s over the fleet, and messages as the publisher
  makes them (what has waited `linger_s` since the publisher woke, up to
  `records_per_message`), so latency from a reading's time to its ack includes the wait
  for its message, as on a line PC.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiomqtt
import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge_agent.ack_timeout import AckTimeout
from edge_agent.outbox import READINGS, numbered
from edge_agent.publisher import envelope_payload
from edge_agent.records import UNNUMBERED
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import Ack, Reading

# A time and a sequence number no reading of the bench has: where each reading's own go.
_TIME_MARK = datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
_SEQ_MARK = 2**63 - 1
# Values per tag the templates cycle through (the rollups see a spread, not a constant).
VARIANTS = 16
EPOCH = "bench-e1"


def edge_name(index: int) -> str:
    return f"bench-edge-{index:02d}"


def line_name(index: int) -> str:
    return f"line-{index:02d}"


def device_name(index: int) -> str:
    return f"plc-{index:02d}"


def reading_templates(line: str, batch: str | None, device: str, tags: int) -> list[list[str]]:
    """Per tag, per value variant: the JSON the edge's outbox stores for such a reading,
    with `%d` for its sequence number and `%s` for its time."""
    table = []
    for t in range(tags):
        row = []
        for v in range(VARIANTS):
            body = Reading(
                seq=UNNUMBERED,
                time=_TIME_MARK,
                line=line,
                batch=batch,
                device=device,
                tag=f"tag-{t:03d}",
                value=round(20.0 + t / 7 + v / 10, 3),
                unit="Cel",
            ).model_dump_json()
            body = numbered(body.replace("%", "%%"), _SEQ_MARK)
            seq_at, time_at = f'"seq":{_SEQ_MARK},', f'"{iso(_TIME_MARK)}"'
            if body.count(seq_at) != 1 or body.count(time_at) != 1:
                raise AssertionError(f"cannot find seq and time once in {body}")
            row.append(body.replace(seq_at, '"seq":%d,').replace(time_at, '"%s"'))
        table.append(row)
    return table


def iso(moment: datetime | float) -> str:
    """A time as the contract's JSON writes it (UTC, `Z`)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class _Flight:
    last_seq: int
    payload: bytes
    polls: list[tuple[float, int]]  # (reading time, readings of that time) in the message
    sent_at: float = 0.0
    resent: bool = False  # sent again (its round trip is not sampled)


@dataclass
class EdgeTally:
    """What one edge sent and what its acks said."""

    readings: int = 0  # made (numbered 0..readings-1)
    messages: int = 0
    committed: int = 0  # settled by an ack that says committed
    duplicate_acks: int = 0  # of them, acks of a resend that found them committed before
    refused: int = 0  # settled by an ack that refuses them (never committed)
    resent_messages: int = 0
    late_acks: int = 0  # acks of a range settled already or no longer in flight
    bad_acks: int = 0  # not a trace.v1 ack of this edge
    first_send: float = math.inf
    last_ack: float = 0.0
    # (seconds from reading time to ack, readings) per poll, or per part of one
    latencies: list[tuple[float, int]] = field(default_factory=list)


class SimulatedEdge:
    def __init__(
        self,
        index: int,
        broker: BrokerSettings,
        tags: int,
        batch: str | None,
        records_per_message: int,
        window: int,
        ack_timeout_s: float,
        linger_s: float,
        epoch: str = EPOCH,
    ) -> None:
        self.edge_id = edge_name(index)
        self.epoch = epoch
        self.line = line_name(index)
        self.broker = broker
        self.tags = tags
        self.records_per_message = records_per_message
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.ack_timeout = AckTimeout(ack_timeout_s)  # as the edge's publisher waits
        self.linger_s = linger_s
        self.templates = reading_templates(self.line, batch, device_name(index), tags)
        self.topic = topics.data(self.edge_id, READINGS)
        self.tally = EdgeTally()
        self._inflight: dict[int, _Flight] = {}
        self._progress: float | None = None  # when the oldest in flight was last acked
        self._room = asyncio.Event()
        self._pending: deque[list[float | int]] = deque()  # [time, first seq, count] per poll
        self._next_seq = 0

    # -- making messages ------------------------------------------------------------------

    def payload(self, first_seq: int, polls: Sequence[tuple[float, int]]) -> bytes:
        """The envelope of the readings first_seq.. taken at `polls` (time, count)."""
        bodies = []
        seq = first_seq
        templates, tags = self.templates, self.tags
        for moment, count in polls:
            stamp = iso(moment)
            for s in range(seq, seq + count):
                bodies.append(templates[s % tags][(s // tags) % VARIANTS] % (s, stamp))
            seq += count
        return envelope_payload(self.edge_id, READINGS, self.epoch, bodies).encode()

    def _poll(self, moment: float) -> None:
        self._pending.append([moment, self._next_seq, self.tags])
        self._next_seq += self.tags
        self.tally.readings += self.tags

    def _waiting(self) -> int:
        return sum(int(count) for _, _, count in self._pending)

    def _take(self, limit: int) -> tuple[int, list[tuple[float, int]]]:
        """Up to `limit` pending readings, oldest first (a poll may be split)."""
        first = int(self._pending[0][1])
        polls: list[tuple[float, int]] = []
        left = limit
        while self._pending and left:
            moment, seq, count = self._pending[0]
            n = min(int(count), left)
            polls.append((float(moment), n))
            left -= n
            if n == count:
                self._pending.popleft()
            else:
                self._pending[0] = [moment, int(seq) + n, int(count) - n]
        return first, polls

    # -- the run --------------------------------------------------------------------------

    async def run(self, connected: asyncio.Barrier, readings: int, rate: float | None) -> EdgeTally:
        """Connect, wait for the whole fleet at `connected`, then make `readings` readings
        (whole polls), flat out or at `rate` readings/s, and return once every message is
        settled."""
        polls = max(1, readings // self.tags)
        async with aiomqtt.Client(
            **self.broker.client_args(),  # type: ignore[arg-type]
            identifier=self.edge_id,
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            # Acks straight from paho's read, not through aiomqtt's queue and iterator.
            client._client.on_message = self._on_message
            await client.subscribe(topics.ack(self.edge_id), qos=1)
            await connected.wait()
            expiry = asyncio.create_task(self._expiry_loop(client))
            try:
                if rate is None:
                    await self._flat_out(client, polls)
                else:
                    await self._at_rate(client, polls, rate)
                while self._inflight:
                    self._room.clear()
                    await self._room.wait()
            finally:
                expiry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await expiry
        return self.tally

    async def _flat_out(self, client: aiomqtt.Client, polls: int) -> None:
        made = 0
        while made < polls or self._pending:
            await self._window_room()
            now = time.time()
            while made < polls and self._waiting() < self.records_per_message:
                self._poll(now)
                made += 1
            self._send(client, *self._take(self.records_per_message))

    async def _at_rate(self, client: aiomqtt.Client, polls: int, rate: float) -> None:
        period = self.tags / rate  # seconds between polls of this edge
        start = time.time()
        made = 0
        sender = asyncio.create_task(self._publisher(client, lambda: made >= polls))
        try:
            while made < polls:
                self._poll(time.time())
                made += 1
                self._room.set()  # wakes the publisher as a new record does on a line PC
                await asyncio.sleep(max(0.0, start + made * period - time.time()))
            await sender
        finally:
            sender.cancel()

    async def _publisher(self, client: aiomqtt.Client, done: Callable[[], bool]) -> None:
        """The edge publisher's loop: woken by new records, it lingers, then sends what
        has waited, up to records_per_message per message, while the window has room."""
        while not (done() and not self._pending):
            if not self._pending:
                self._room.clear()
                await self._room.wait()
                continue
            if self.linger_s:
                await asyncio.sleep(self.linger_s)
            while self._pending:
                await self._window_room()
                self._send(client, *self._take(self.records_per_message))

    async def _window_room(self) -> None:
        while len(self._inflight) >= self.window:
            self._room.clear()
            await self._room.wait()

    def _send(self, client: aiomqtt.Client, first_seq: int, polls: list[tuple[float, int]]) -> None:
        count = sum(n for _, n in polls)
        flight = _Flight(first_seq + count - 1, self.payload(first_seq, polls), polls)
        self._inflight[first_seq] = flight
        flight.sent_at = time.monotonic()
        self.tally.first_send = min(self.tally.first_send, time.time())
        self.tally.messages += 1
        self._publish(client, flight.payload)

    def _publish(self, client: aiomqtt.Client, payload: bytes) -> None:
        """Hand a message to paho (QoS 1) without waiting for the broker's PUBACK: the window
        is counted in the collector's acks, as the edge counts it. With aiomqtt's publish (a
        future and a timeout per message) and its message queue the generator used 36 % of
        a core at 100 records a message, now 25 %: a core the broker, the database and the
        collector share with it here."""
        info = client._client.publish(self.topic, payload, qos=1)
        if info.rc != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
            # The connection is gone: the ack wait sends it again, as the edge would.
            raise aiomqtt.MqttError(f"{self.edge_id} publish failed: {mqtt.error_string(info.rc)}")

    async def _expiry_loop(self, client: aiomqtt.Client) -> None:
        """As the edge does on an ack timeout: everything in flight goes again, in order."""
        while True:
            await asyncio.sleep(min(0.5, self.ack_timeout_s / 4))
            oldest = self._inflight.get(min(self._inflight, default=-1))
            if oldest is not None and self.ack_timeout.overdue(
                oldest.sent_at, self._progress, time.monotonic()
            ):
                self.ack_timeout.timed_out()
                for first_seq in sorted(self._inflight):
                    flight = self._inflight.get(first_seq)
                    if flight is None:
                        continue  # settled while we were sending
                    flight.sent_at = time.monotonic()
                    flight.resent = True
                    self.tally.resent_messages += 1
                    self._publish(client, flight.payload)

    def _on_message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self.on_ack(message.payload, time.time())

    def on_ack(self, payload: object, at: float) -> None:
        """Settle the message an ack names exactly; count anything else and go on."""
        try:
            ack = Ack.model_validate_json(payload, strict=True)  # type: ignore[arg-type]
        except ValidationError:
            self.tally.bad_acks += 1
            return
        if ack.edge_id != self.edge_id or ack.epoch != self.epoch or ack.stream != READINGS:
            self.tally.bad_acks += 1
            return
        flight = self._inflight.get(ack.first_seq)
        if flight is None or flight.last_seq != ack.last_seq:
            self.tally.late_acks += 1
            return
        del self._inflight[ack.first_seq]
        if all(first > ack.first_seq for first in self._inflight):
            self._progress = time.monotonic()
        if not flight.resent:
            self.ack_timeout.acknowledged(time.monotonic() - flight.sent_at)
        count = ack.last_seq - ack.first_seq + 1
        refused = sum(r.last_seq - r.first_seq + 1 for r in ack.refused_runs())
        self.tally.refused += refused
        self.tally.committed += count - refused
        self.tally.duplicate_acks += ack.duplicate
        self.tally.last_ack = max(self.tally.last_ack, at)
        if not refused:
            self.tally.latencies.extend((at - moment, n) for moment, n in flight.polls)
        self._room.set()


async def acknowledged_elsewhere(broker: BrokerSettings, index: int, wait_s: float = 3.0) -> bool:
    """Whether a collector already consumes this broker's edge data: one reading (line
    idle, an epoch of its own) published as edge `index` while none of the bench's runs.
    An ack means that collector would take every reading of the bench into its database."""
    edge = SimulatedEdge(
        index, broker, 1, None, 1, 1, wait_s, 0.0, epoch=f"bench-probe-{time.time_ns():x}"
    )
    async with aiomqtt.Client(
        **broker.client_args(),  # type: ignore[arg-type]
        identifier=edge.edge_id,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(topics.ack(edge.edge_id), qos=1)
        edge._send(client, 0, [(time.time(), 1)])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    edge.on_ack(message.payload, time.time())
                    if not edge._inflight:
                        return True
    return False
