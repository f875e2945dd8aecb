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


@pytest.mark.parametrize(
    ("sent_at", "previous_acked_at", "now", "overdue"),
    [
        (0.0, None, 9.9, False),  # waited less than the timeout since its sending
        (0.0, None, 10.1, True),
        (0.0, 5.0, 11.1, False),  # the message before it was acked at 5: its wait began then
        (0.0, 5.0, 15.1, True),
        (8.0, 5.0, 18.1, True),  # sent after that ack: its wait began at its sending
        (8.0, 5.0, 17.9, False),
    ],
)
def test_the_oldest_message_waits_from_its_sending_or_the_ack_before_it(
    sent_at: float, previous_acked_at: float | None, now: float, overdue: bool
) -> None:
    timeout = AckTimeout(10.0)
    assert timeout.seconds == 10.0
    assert timeout.overdue(sent_at, previous_acked_at, now) is overdue
