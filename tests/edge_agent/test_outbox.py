"""The outbox interface's rules: order, acks remove exactly what they name, requeue resends."""

from __future__ import annotations

from datetime import UTC, datetime

from edge_agent.outbox import MemoryOutbox

AT = datetime(2026, 11, 25, tzinfo=UTC)


def fields(value: float) -> dict:
    return {
        "kind": "reading",
        "time": AT,
        "line": "l",
        "batch": None,
        "device": "d",
        "tag": "t",
        "value": value,
    }


def test_take_accept_requeue() -> None:
    box = MemoryOutbox(epoch="e1")
    assert [box.append("readings", fields(v)) for v in range(5)] == [0, 1, 2, 3, 4]
    assert [r.seq for r in box.take("readings", 2)] == [0, 1]
    assert [r.seq for r in box.take("readings", 2)] == [2, 3]
    assert box.accept("readings", "e1", 0, 1) == 2
    assert box.accept("readings", "other-epoch", 2, 3) == 0  # not this outbox's ack
    box.requeue("readings")  # 2 and 3 were never acknowledged: they go again first
    assert [r.seq for r in box.take("readings", 10)] == [2, 3, 4]
    assert box.accept("readings", "e1", 2, 4) == 3
    assert box.depth("readings") == 0 and box.take("readings", 10) == []
