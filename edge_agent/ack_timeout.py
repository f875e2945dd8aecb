"""How long the edge waits for an ack before it sends a message again.

A fixed timeout collapses under load. When the queue in front of the collectors holds more
than a timeout's worth of messages (a fleet draining an outage's backlog flat out, 50
messages in flight per edge), every edge sends everything in flight again, the collectors
settle each message twice, the queue grows and the resends repeat: measured with the
ingest benchmark, 25,700 of 125,700 readings settled in 300 s. So the timeout follows the
acks' round trip as TCP's retransmission timer does (RFC 6298): the smoothed round trip
plus four times its variation, never below the configured ack timeout
(TRACE_EDGE_ACK_TIMEOUT_S), doubled after each timeout until a message sent once is
acknowledged, at most `ceiling_s`, and back to the round trip's when a collector comes
online. The round trip of a message sent more than once is not sampled (Karn's rule: its
ack may answer either sending). The wait of a stream's oldest message in flight runs from
the ack of the message before it when that came later than its sending (the publisher's
_expire_inflight: TCP restarts its timer on each ack of new data).
"""

from __future__ import annotations

from dataclasses import dataclass

CEILING_S = 120.0
_MAX_BACKOFF = 64.0


@dataclass
class AckTimeout:
    floor_s: float
    ceiling_s: float = CEILING_S
    smoothed_s: float | None = None
    variation_s: float = 0.0
    backoff: float = 1.0

    @property
    def seconds(self) -> float:
        """The wait for an ack now."""
        base = self.floor_s
        if self.smoothed_s is not None:
            base = max(base, self.smoothed_s + 4 * self.variation_s)
        return min(base * self.backoff, max(self.ceiling_s, self.floor_s))

    def overdue(self, sent_at: float, previous_acked_at: float | None, now: float) -> bool:
        """Whether a stream's oldest message in flight, sent at `sent_at`, has waited too
        long for its ack: counted from the ack of the message before it when that came
        later (monotonic seconds)."""
        return now - max(sent_at, previous_acked_at or sent_at) > self.seconds

    def acknowledged(self, round_trip_s: float) -> None:
        """An ack of a message sent once, `round_trip_s` after it was sent."""
        if self.smoothed_s is None:
            self.smoothed_s, self.variation_s = round_trip_s, round_trip_s / 2
        else:
            self.variation_s = 0.75 * self.variation_s + 0.25 * abs(self.smoothed_s - round_trip_s)
            self.smoothed_s = 0.875 * self.smoothed_s + 0.125 * round_trip_s
        self.backoff = 1.0

    def collector_joined(self) -> None:
        """A collector came online (after an outage, a restart): what is sent again reaches
        it, so the wait falls back from its backoff to what the round trip says."""
        self.backoff = 1.0

    def timed_out(self) -> None:
        """No ack came in time: wait longer for the messages sent again."""
        self.backoff = min(self.backoff * 2, _MAX_BACKOFF)
