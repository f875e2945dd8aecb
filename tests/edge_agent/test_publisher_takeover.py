"""A collector that goes offline takes with it what it held of this edge's messages: the
publisher sends everything in flight again at once, on the collector's own word only (its
status, not retained), and nothing else on the status topic changes anything."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.outbox import EVENTS, Outbox
from edge_agent.publisher import Publisher, _InFlight
from edge_agent.store import EdgeStore
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import CollectorStatus
from tests.edge_agent.test_publisher import event


def _status(state: str) -> bytes:
    status = CollectorStatus(collector_id="collector-a", state=state, time=datetime.now(UTC))  # type: ignore[arg-type]
    return status.model_dump_json().encode()


@pytest.fixture
def in_flight(tmp_path: Path) -> tuple[Outbox, Publisher]:
    """Ten events, 0..4 and 5..9 sent and awaiting their acks."""
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    outbox.append_many([(EVENTS, event(n)) for n in range(10)])
    publisher = Publisher("edge-1", outbox, BrokerSettings(), asyncio.Event())
    for first in (0, 5):
        run = outbox.take(EVENTS, 5)
        publisher._inflight[(EVENTS, first)] = _InFlight(EVENTS, first, first + 4, outbox.epoch)
        assert run[0][0] == first
    return outbox, publisher


def test_a_collector_going_offline_sends_what_is_in_flight_again_at_once(
    in_flight: tuple[Outbox, Publisher],
) -> None:
    outbox, publisher = in_flight
    publisher.on_collector_status(_status("offline"))
    assert publisher._inflight == {}
    assert [seq for seq, _ in outbox.take(EVENTS, 10)] == list(range(10))  # from the start
    assert publisher.health.collectors_offline == 1
    assert outbox.depth(EVENTS) == 10  # nothing deleted: only the acks delete


UNCHANGING = {
    "online": (_status("online"), False),
    "offline, retained (history)": (_status("offline"), True),
    "not JSON": (b"\xff\x00", False),
    "not a status": (b'{"state": "offline"}', False),
    "an unknown state": (_status("offline").replace(b"offline", b"gone"), False),
}


@pytest.mark.parametrize("case", UNCHANGING, ids=list(UNCHANGING))
def test_nothing_else_on_the_status_topic_moves_what_is_in_flight(
    in_flight: tuple[Outbox, Publisher], case: str
) -> None:
    outbox, publisher = in_flight
    payload, retained = UNCHANGING[case]
    publisher.on_collector_status(payload, retained=retained)
    assert set(publisher._inflight) == {(EVENTS, 0), (EVENTS, 5)}
    assert outbox.take(EVENTS, 10) == []  # nothing requeued
    assert publisher.health.collectors_offline == 0
