"""Acks that cannot lie, against a real broker: whatever is published on an edge's ack
topic, retained or not, the publisher keeps running and its outbox keeps every record that
no matching ack confirmed; an ack the collector marks refused moves exactly that message's
records to the quarantine, and the records behind them flow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from edge_agent.control import ControlAccess, create_control_app
from edge_agent.outbox import EVENTS, Outbox
from edge_agent.publisher import Publisher, _InFlight
from edge_agent.records import UNNUMBERED
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from edge_agent.store import EdgeStore
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import MAX_SEQ, BatchEvent, EdgeStatus
from tests.conftest import MosquittoProcess, now_true, until

AT = datetime(2026, 11, 25, tzinfo=UTC)


def event(n: int) -> BatchEvent:
    return BatchEvent(
        seq=UNNUMBERED, kind="batch_started", time=AT, line="l", batch=f"B{n}", by="op"
    )


class CollectorSide:
    """One client as the collector (the only identity that may publish acks once the broker
    checks ACLs): it reads the edge's data and retained status, acknowledges when told to,
    and publishes forged acks. One connection for all of it: a second one with the same
    identity would take this one's session over."""

    def __init__(self, broker: BrokerSettings, edge_id: str) -> None:
        self.broker, self.edge_id = broker, edge_id
        self.messages: list[tuple[str, str, int, int]] = []
        self.statuses: list[EdgeStatus] = []
        self.ack_all = False
        self.ack_delay_s = 0.0  # a queue in front of the collector: each ack this late
        # A collector working through a queue: acks in arrival order, each `ack_delay_s`
        # after its message arrived and no earlier than the ack before it; a stall before
        # the ack of a first seq in `stalls` delays it and everything behind it.
        self.in_order = False
        self.stalls: dict[int, float] = {}
        self.held_once: set[int] = set()  # first seqs a dead collector took: never acked once
        self._queue: asyncio.Queue[tuple[float, int, str]] = asyncio.Queue()
        self.refuse: set[int] = set()  # first seqs to answer `refused`
        self._later: set[asyncio.Task[None]] = set()
        self._client = aiomqtt.Client(
            **broker.client_args(),  # type: ignore[arg-type]
            identifier=f"collector-side-{uuid.uuid4().hex[:6]}",
            protocol=aiomqtt.ProtocolVersion.V5,
        )

    async def __aenter__(self) -> CollectorSide:
        await self._client.__aenter__()
        await self._client.subscribe(f"{topics.ROOT}/{self.edge_id}/data/+", qos=1)
        await self._client.subscribe(topics.status(self.edge_id), qos=1)
        self._reading = asyncio.create_task(self._read())
        self._working = asyncio.create_task(self._work_queue())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for later in list(self._later):
            later.cancel()
        for task in (self._reading, self._working):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self._client.messages:
            if message.topic.matches(topics.status(self.edge_id)):
                self.statuses.append(EdgeStatus.model_validate_json(message.payload))  # type: ignore[arg-type]
                continue
            env = json.loads(message.payload)  # type: ignore[arg-type]
            first, last = env["records"][0]["seq"], env["records"][-1]["seq"]
            self.messages.append((env["stream"], env["epoch"], first, last))
            if first in self.held_once:
                self.held_once.discard(first)
                continue
            if self.ack_all or first in self.refuse:
                ack = ack_json(self.edge_id, env["stream"], env["epoch"], first, last)
                if first in self.refuse:
                    ack["refused"] = "records[0].batch: differs from what was committed"
                if self.in_order:
                    self._queue.put_nowait((time.monotonic(), first, json.dumps(ack)))
                elif self.ack_delay_s:
                    later = asyncio.create_task(self._ack_later(json.dumps(ack)))
                    self._later.add(later)
                    later.add_done_callback(self._later.discard)
                else:
                    await self._client.publish(topics.ack(self.edge_id), json.dumps(ack), qos=1)

    async def _work_queue(self) -> None:
        while True:
            arrived, first, ack = await self._queue.get()
            wait_s = arrived + self.ack_delay_s - time.monotonic() + self.stalls.get(first, 0.0)
            await asyncio.sleep(max(wait_s, 0.0))
            await self._client.publish(topics.ack(self.edge_id), ack, qos=1)

    async def _ack_later(self, ack: str) -> None:
        await asyncio.sleep(self.ack_delay_s)
        await self._client.publish(topics.ack(self.edge_id), ack, qos=1)

    async def forge(self, acks: list[bytes], retain: bool) -> None:
        """Publish on the edge's ack topic what no collector would."""
        for payload in acks:
            await self._client.publish(topics.ack(self.edge_id), payload, qos=1, retain=retain)


async def edge_identity(broker: MosquittoProcess, edge_id: str) -> BrokerSettings:
    """The edge's own identity where the broker checks identities, else the broker as is."""
    register = getattr(broker, "register", None)
    return await register(edge_id) if register is not None else broker.broker


def ack_json(edge_id: str, stream: str, epoch: str, first: object, last: object) -> dict:
    return {
        "contract": "trace.v1",
        "edge_id": edge_id,
        "stream": stream,
        "epoch": epoch,
        "first_seq": first,
        "last_seq": last,
    }


@contextlib.asynccontextmanager
async def running(publisher: Publisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publisher.run())
    try:
        await until(lambda: now_true(publisher.health.connected), 10, "the edge connected")
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_no_ack_retained_or_not_can_stop_the_publisher_or_delete_what_it_awaits(
    tmp_path: Path, private_broker: MosquittoProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.publisher")
    edge_id = "edge-acks"
    broker = await edge_identity(private_broker, edge_id)
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    epoch = outbox.epoch
    wake = asyncio.Event()
    outbox.on_append = wake.set

    def make_publisher() -> Publisher:
        return Publisher(edge_id, outbox, broker, wake, max_records=3, ack_timeout_s=300)

    def forged(**changes: object) -> bytes:
        return json.dumps({**ack_json(edge_id, EVENTS, epoch, 0, 2), **changes}).encode()

    async with CollectorSide(private_broker.broker, edge_id) as collector:
        # A forged "everything is committed", retained before the edge ever connects.
        await collector.forge([forged(last_seq=MAX_SEQ)], retain=True)
        publisher = make_publisher()
        async with running(publisher) as task:
            outbox.append_many([(EVENTS, event(n)) for n in range(6)])
            await until(lambda: now_true(len(collector.messages) == 2), 10, "two messages sent")
            assert [m[2:] for m in collector.messages] == [(0, 2), (3, 5)]
            await until(
                lambda: now_true(publisher.health.acks_ignored.get("retained") == 1),
                10,
                "the retained ack counted",
            )
            hostile: list[tuple[bytes, str]] = [
                (b"\xff\xfe{\x00", "not_utf8"),
                (b"{", "not_json"),
                (b"", "not_json"),
                (b"[]", "invalid"),
                (forged(first_seq=2**70, last_seq=2**70 + 5), "invalid"),  # past 64 bits
                (forged(first_seq=2**63, last_seq=2**63), "invalid"),
                (forged(first_seq=-1), "invalid"),
                (forged(first_seq="0"), "invalid"),  # wrong type
                (forged(last_seq=2.5), "invalid"),
                (forged(refused=""), "invalid"),
                (forged(stream="events/../x"), "invalid"),
                (forged(edge_id="edge-other"), "other_edge"),
                (forged(epoch="0" * 32), "other_epoch"),
                (forged(first_seq=0, last_seq=MAX_SEQ), "overlapping_range"),
                (forged(first_seq=0, last_seq=5), "overlapping_range"),
                (forged(first_seq=1, last_seq=2), "overlapping_range"),
                (forged(first_seq=2, last_seq=3), "overlapping_range"),
                (forged(first_seq=6, last_seq=MAX_SEQ), "unknown_range"),
                (forged(stream="readings"), "unknown_range"),
                (forged(first_seq=1, last_seq=2, refused="forged refusal"), "overlapping_range"),
            ]
            # Each twice: counted twice, logged once.
            await collector.forge([p for p, _ in hostile for _ in range(2)], retain=False)
            expected: dict[str, int] = {"retained": 1}
            for _, reason in hostile:
                expected[reason] = expected.get(reason, 0) + 2
            await until(
                lambda: now_true(publisher.health.acks_ignored == expected),
                10,
                f"every hostile ack counted by reason: {expected}",
            )
            assert not task.done() and publisher.health.connected
            assert outbox.depth(EVENTS) == 6 and outbox.stats().quarantined == 0
            assert publisher.health.records_acked == 0
            logged = [r for r in caplog.records if "ignoring an ack" in r.getMessage()]
            assert len(logged) == len(expected)  # once per reason, however many arrive
            # The edge keeps publishing...
            outbox.append_many([(EVENTS, event(n)) for n in (6, 7)])
            await until(lambda: now_true(len(collector.messages) == 3), 10, "a third message")
            # ...and the collector's real ack, exactly a message in flight, still applies.
            await collector.forge([forged()], retain=False)
            await until(lambda: now_true(publisher.health.records_acked == 3), 10, "0..2 acked")
            assert outbox.depth(EVENTS) == 5
            assert any("acks ignored that no collector sends" in a for a in publisher.alarms())

        # Retained garbage stays on the broker: a restarted edge meets it again, goes on.
        await collector.forge([b"\xff" * 10, forged(first_seq=2**80)], retain=True)
        collector.ack_all = True
        publisher = make_publisher()
        async with running(publisher) as task:
            await until(lambda: now_true(outbox.depth(EVENTS) == 0), 15, "everything acked")
            assert publisher.health.acks_ignored == {"retained": 1}  # the last retained one
            assert not task.done()


def write_site(folder: Path, edge_id: str) -> Path:
    site = folder / "site.yaml"
    site.write_text(yaml.safe_dump({"edge_id": edge_id, "lines": [{"id": "line-1"}]}))
    return site


async def test_a_refused_message_is_quarantined_shown_in_the_status_and_the_rest_flows(
    tmp_path: Path, private_broker: MosquittoProcess
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:6]}"
    settings = EdgeSettings(
        state_dir=tmp_path / "state",
        mqtt=await edge_identity(private_broker, edge_id),
        publish_linger_s=0.0,
        status_interval_s=0.2,
    )
    agent = EdgeAgent(settings, load_site(write_site(tmp_path, edge_id)))
    async with CollectorSide(private_broker.broker, edge_id) as collector:
        collector.ack_all, collector.refuse = True, {0}
        task = asyncio.create_task(agent.run(poll=False, control=False))
        try:
            agent.binder.start_batch("line-1", "WO-1", "op")  # seq 0: the refused message
            await until(
                lambda: now_true(agent.outbox.stats().quarantined > 0), 10, "the refusal applied"
            )
            refused = collector.messages[0]
            quarantined = refused[3] - refused[2] + 1
            agent.binder.end_batch("line-1", "op")
            agent.binder.start_batch("line-1", "WO-2", "op")
            await until(lambda: now_true(agent.outbox.depth(EVENTS) == 0), 10, "the rest acked")
            assert agent.outbox.stats().quarantined == quarantined
            assert agent.publisher.health.records_quarantined == quarantined

            def alarm() -> str | None:
                for status in reversed(collector.statuses):
                    for a in status.alarms:
                        if "quarantined" in a:
                            return a
                return None

            shown = await until(lambda: now_true(alarm()), 10, "the status shows the quarantine")
            assert f"{quarantined} records quarantined" in shown
            assert "differs from what was committed" in shown
            assert agent.status()["outbox"]["quarantined"] == quarantined

            access = ControlAccess.of("t" * 32, "127.0.0.1", 8100)
            app = create_control_app(agent.binder, agent.status, access=access)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8100"
            ) as control:
                body = (await control.get("/api/v1/quarantine")).json()
            assert body["count"] == quarantined
            oldest = body["records"][-1]["record"]
            assert (oldest["kind"], oldest["batch"], oldest["seq"]) == ("batch_started", "WO-1", 0)
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            agent.close()


GENUINE_VARIANTS = {("duplicate", bool), ("refused", str), ("refused", type(None))}


def test_thousands_of_mutated_acks_never_raise_and_never_delete(tmp_path: Path) -> None:
    """Random bytes and random edits of a genuine ack, fed to the ack handler directly: it
    never raises, and only the one exact genuine ack deletes anything."""
    import random

    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    outbox.append_many([(EVENTS, event(n)) for n in range(10)])
    publisher = Publisher("edge-1", outbox, BrokerSettings(), asyncio.Event())
    for first, last in ((0, 4), (5, 9)):  # two messages in flight, as the send loop does
        run = outbox.take(EVENTS, 5)
        assert (run[0][0], run[-1][0]) == (first, last)
        publisher._inflight[(EVENTS, first)] = _InFlight(EVENTS, first, last, outbox.epoch)
    genuine = json.dumps(ack_json("edge-1", EVENTS, outbox.epoch, 0, 4))
    rng = random.Random(20261202)
    values: list[object] = [None, True, -1, 0, 4, 5, 9, 2**63, 2**64 + 1, 1e308, "4", [], {}, ""]
    for _ in range(3000):
        choice = rng.random()
        if choice < 0.3:
            payload = rng.randbytes(rng.randint(0, 64))
        elif choice < 0.6:
            text = list(genuine)
            for _ in range(rng.randint(1, 4)):
                text[rng.randrange(len(text))] = chr(rng.randint(0, 0x2FF))
            payload = "".join(text).encode("utf-8", "surrogatepass")
        else:
            ack = json.loads(genuine)
            key, value = rng.choice([*ack, "duplicate", "refused", "extra"]), rng.choice(values)
            if ack.get(key, object()) == value or (key, type(value)) in GENUINE_VARIANTS:
                continue  # still the genuine ack (a duplicate, or a real refusal)
            ack[key] = value
            payload = json.dumps(ack).encode()
        with contextlib.suppress(ValueError):
            if json.loads(payload) == json.loads(genuine):
                continue  # an edit that left the genuine ack (a space for a tab, ...)
        publisher.on_ack(payload, retained=rng.random() < 0.05)
        assert outbox.depth(EVENTS) == 10, payload
    publisher.on_ack(genuine.encode())
    assert outbox.depth(EVENTS) == 5 and publisher.health.records_acked == 5


async def _one_record_messages(
    tmp_path: Path, broker: MosquittoProcess, edge_id: str, ack_timeout_s: float
) -> tuple[Outbox, Publisher]:
    """An edge's outbox and a publisher sending each record as a message of its own."""
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    wake = asyncio.Event()
    outbox.on_append = wake.set
    settings = await edge_identity(broker, edge_id)
    publisher = Publisher(
        edge_id, outbox, settings, wake, max_records=1, ack_timeout_s=ack_timeout_s
    )
    return outbox, publisher


async def _one_event_every(
    interval_s: float, count: int, outbox: Outbox, publisher: Publisher
) -> None:
    """Events captured one every `interval_s`, until the collector acknowledged them all."""
    for n in range(count):
        outbox.append_many([(EVENTS, event(n))])
        await asyncio.sleep(interval_s)
    await until(lambda: now_true(publisher.health.records_acked == count), 30, "every event acked")


async def test_acks_slower_than_the_timeout_do_not_make_the_edge_send_everything_again(
    tmp_path: Path, private_broker: MosquittoProcess
) -> None:
    """A queue in front of the collectors longer than the ack timeout (a fleet draining its
    backlog): after the first timeout the edge waits as long as the acks take, instead of
    sending every message again each time the fixed timeout passes."""
    edge_id = "edge-slow-acks"
    outbox, publisher = await _one_record_messages(tmp_path, private_broker, edge_id, 0.4)
    sent = 24
    async with CollectorSide(private_broker.broker, edge_id) as collector:
        collector.ack_all, collector.ack_delay_s = True, 1.0
        async with running(publisher):
            await _one_event_every(0.25, sent, outbox, publisher)
    # A fixed 0.4 s timeout sent everything in flight again about every 0.4 s (> 10 times).
    assert publisher.health.resends <= 3, publisher.health.resends
    assert publisher.ack_timeout.seconds > 1.0
    assert len(collector.messages) <= sent + 3 * 4


async def test_a_queue_acknowledged_in_order_is_never_sent_again(
    tmp_path: Path, private_broker: MosquittoProcess
) -> None:
    """A fleet draining a backlog: a steady queue in front of the collector, through which
    it acknowledges the edge's messages in order, and then a stall of the whole queue (a
    checkpoint, a long group). The wait learnt from steady round trips is shorter
    than the stall; but the collector keeps acknowledging the messages before, and the wait of
    each runs from the ack of the one before it (as TCP's timer restarts on each ack):
    nothing is sent twice. Measured with the ingest benchmark before this rule: 1,000,000
    readings, 2,035 messages sent again, the collector settling resends behind the queue."""
    edge_id = "edge-queue"
    outbox, publisher = await _one_record_messages(tmp_path, private_broker, edge_id, 2.5)
    sent = 25
    async with CollectorSide(private_broker.broker, edge_id) as collector:
        collector.ack_all, collector.in_order, collector.ack_delay_s = True, True, 2.0
        collector.stalls = {20: 1.5}
        async with running(publisher):
            await _one_event_every(0.1, sent, outbox, publisher)
    # The wait was 2.5 s (the configured floor: 19 round trips of 2 s); the ack of the 20th
    # came 3.5 s after it was sent, and the old rule (a wait from each message's sending)
    # sent it and everything behind it again.
    assert len(collector.messages) == publisher.health.messages_sent == sent


async def test_a_message_a_dead_collector_holds_is_sent_again_while_the_rest_are_acked(
    tmp_path: Path, private_broker: MosquittoProcess
) -> None:
    """Acks of the messages behind the oldest do not keep it waiting: it was taken by a
    collector that died without a word, and goes again one ack timeout after the ack of the
    message before it."""
    edge_id = "edge-held"
    outbox, publisher = await _one_record_messages(tmp_path, private_broker, edge_id, 0.5)
    async with CollectorSide(private_broker.broker, edge_id) as collector:
        collector.ack_all, collector.in_order, collector.ack_delay_s = True, True, 0.1
        collector.held_once = {3}
        outbox.append_many([(EVENTS, event(n)) for n in range(10)])
        async with running(publisher):
            await until(
                lambda: now_true(publisher.health.records_acked == 10), 30, "every event acked"
            )
    firsts = [first for _, _, first, _ in collector.messages]
    assert firsts.count(3) == 2
    assert len(firsts) == 11, firsts  # the other nine once


def test_a_collector_coming_online_ends_the_backoff_of_the_ack_wait(tmp_path: Path) -> None:
    """After an outage the wait for acks has doubled several times; a collector coming back
    online means what is sent again now reaches it, so the edge does not wait minutes."""
    publisher = Publisher(
        "edge-1", Outbox(EdgeStore(tmp_path / "o.db")), BrokerSettings(), asyncio.Event()
    )
    for _ in range(4):
        publisher.ack_timeout.timed_out()
    assert publisher.ack_timeout.seconds == 120.0  # 10 s x 16, at the ceiling
    status = {"collector_id": "c-1", "state": "online", "time": "2026-12-02T10:00:00Z"}
    publisher.on_collector_status(json.dumps(status), retained=True)  # history: no change
    assert publisher.ack_timeout.seconds == 120.0
    publisher.on_collector_status(json.dumps(status))
    assert publisher.ack_timeout.seconds == 10.0
