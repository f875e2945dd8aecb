"""The edge's wait for an ack follows the acks' round trip (edge_agent/ack_timeout.py), so
that a long queue in front of the collectors is not taken for lost messages."""

from __future__ import annotations

import pytest

from edge_agent.ack_timeout import AckTimeout


def test_with_fast_acks_the_configured_timeout_holds() -> None:
    timeout = AckTimeout(10.0)
    assert timeout.seconds == 10.0
    for _ in range(50):
        timeout.acknowledged(0.05)
    assert timeout.seconds == 10.0


def test_a_queue_longer_than_the_timeout_stretches_it_past_the_round_trip() -> None:
    timeout = AckTimeout(10.0)
    for round_trip in (2.0, 5.0, 8.0, 12.0, 15.0, 18.0, 18.0, 18.0):
        timeout.acknowledged(round_trip)
    assert timeout.seconds > 18.0


def test_each_timeout_doubles_the_wait_until_a_message_sent_once_is_acknowledged() -> None:
    timeout = AckTimeout(10.0, ceiling_s=120.0)
    timeout.timed_out()
    assert timeout.seconds == 20.0
    timeout.timed_out()
    assert timeout.seconds == 40.0
    for _ in range(10):
        timeout.timed_out()
    assert timeout.seconds == 120.0  # never past the ceiling
    timeout.acknowledged(0.1)
    assert timeout.seconds == 10.0


@pytest.mark.parametrize("floor", [0.5, 10.0, 300.0])
def test_the_wait_is_never_below_the_configured_timeout(floor: float) -> None:
    timeout = AckTimeout(floor, ceiling_s=120.0)
    timeout.acknowledged(0.001)
    assert timeout.seconds >= floor


def test_a_collector_joining_ends_the_backoff_but_keeps_the_round_trip() -> None:
    timeout = AckTimeout(1.0)
    timeout.acknowledged(2.0)
    base = timeout.seconds
    timeout.timed_out()
    timeout.timed_out()
    assert timeout.seconds == 4 * base
    timeout.collector_joined()
    assert timeout.seconds == base
