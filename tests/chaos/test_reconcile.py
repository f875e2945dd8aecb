"""The reconciliation catches what it exists to catch: a missing row, a doubled row, an
invented row, and a gap no record explains; and it accepts gaps its records do explain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.chaos.reconcile import (
    CommittedReading,
    Database,
    DeviceEvent,
    DeviceLedger,
    DroppedRange,
    judge,
)

EDGE, EPOCH, DEVICE, TAG = "edge-1", "e1", "plc", "counter"
T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def rows(values: list[int], seqs: list[int] | None = None) -> list[CommittedReading]:
    """Counter readings, one per poll: value v taken at T0 + v seconds, numbered as given
    (by default the poll's own number less one, as a device with one tag is numbered)."""
    seqs = seqs if seqs is not None else [v - 1 for v in values]
    return [
        CommittedReading(EDGE, EPOCH, seq, DEVICE, TAG, float(v), T0 + timedelta(seconds=v))
        for v, seq in zip(values, seqs, strict=True)
    ]


def ledger(served: int, in_flight: frozenset[int] = frozenset()) -> list[DeviceLedger]:
    return [DeviceLedger(EDGE, DEVICE, TAG, served, in_flight)]


def test_everything_once_is_clean() -> None:
    verdict = judge(ledger(5), Database(rows([1, 2, 3, 4, 5])))
    assert verdict.clean, verdict.summary()
    assert (verdict.produced, verdict.committed) == (5, 5)


def test_a_missing_row_is_caught() -> None:
    # 3 never arrived, and its number is a hole nobody explains.
    verdict = judge(ledger(5), Database(rows([1, 2, 4, 5])))
    assert not verdict.clean
    assert [(m.device, m.value) for m in verdict.missing] == [(DEVICE, 3)]
    assert verdict.unexplained_holes == [(EDGE, EPOCH, 2)]


def test_a_missing_row_at_the_end_is_caught() -> None:
    verdict = judge(ledger(5), Database(rows([1, 2, 3, 4])))
    assert [m.value for m in verdict.missing] == [5]


def test_a_doubled_row_is_caught() -> None:
    # The same reading committed under a second number (a resend numbered again).
    verdict = judge(ledger(3), Database(rows([1, 2, 2, 3], seqs=[0, 1, 2, 3])))
    assert not verdict.clean
    assert verdict.doubled == [(EDGE, DEVICE, 2.0, 2)]


def test_a_row_nobody_produced_is_caught() -> None:
    verdict = judge(ledger(3), Database(rows([1, 2, 3, 9])))
    assert verdict.phantom == [(EDGE, DEVICE, 9.0)]


def test_a_gap_explained_by_readings_dropped_is_accepted() -> None:
    # The outbox thinned 2 of numbers 2..5 (2 and 4): values 3 and 5 never left the edge.
    db = Database(rows([1, 2, 4, 6], seqs=[0, 1, 3, 5]), [DroppedRange(EDGE, EPOCH, 2, 4, 2)])
    verdict = judge(ledger(6), db)
    assert verdict.clean, verdict.summary()
    assert verdict.explained["readings_dropped"] == 2


def test_a_drop_record_claiming_more_than_is_missing_is_caught() -> None:
    db = Database(rows([1, 2, 4], seqs=[0, 1, 3]), [DroppedRange(EDGE, EPOCH, 2, 3, 2)])
    verdict = judge(ledger(4), db)
    assert [(edge, claimed, found) for edge, _, claimed, found in verdict.overstated_drops] == [
        (EDGE, 2, 1)
    ]


def test_drops_after_the_last_committed_reading_count_as_holes_too() -> None:
    # Everything after reading 3 was dropped (the outbox stayed full to the end).
    exact = Database(rows([1, 2, 3]), [DroppedRange(EDGE, EPOCH, 3, 4, 2)])
    assert judge(ledger(5), exact).clean
    claims_more = Database(rows([1, 2, 3]), [DroppedRange(EDGE, EPOCH, 3, 4, 3)])
    assert not judge(ledger(5), claims_more).clean
    claims_less = Database(rows([1, 2, 3]), [DroppedRange(EDGE, EPOCH, 3, 5, 2)])
    assert judge(ledger(6), claims_less).unexplained_holes == [(EDGE, EPOCH, 5)]


def test_readings_lost_after_the_last_committed_one_are_caught_by_the_edge_numbering() -> None:
    # The edge dropped 3..4 and recorded it, then 5..9 never arrived: the device's counter
    # alone cannot tell (no later reading bounds them), the outbox's numbering can.
    db = Database(rows([1, 2, 3]), [DroppedRange(EDGE, EPOCH, 3, 4, 2)])
    numbered = [DeviceLedger(EDGE, DEVICE, TAG, 10, numbered=(EPOCH, 10))]
    verdict = judge(numbered, db)
    assert verdict.unexplained_holes == [(EDGE, EPOCH, seq) for seq in range(5, 10)]


def test_a_loss_hidden_inside_a_dropped_range_is_caught() -> None:
    # The edge says it dropped one of 1..4; two are gone.
    db = Database(rows([1, 4, 5], seqs=[0, 3, 4]), [DroppedRange(EDGE, EPOCH, 1, 4, 1)])
    verdict = judge(ledger(5), db)
    assert not verdict.clean
    assert len(verdict.unexplained_holes) == 1


def test_a_gap_of_another_epoch_or_edge_is_not_explained_by_its_drop_record() -> None:
    db = Database(
        rows([1, 2, 4], seqs=[0, 1, 3]),
        [DroppedRange(EDGE, "another-epoch", 0, 10, 1), DroppedRange("edge-2", EPOCH, 0, 10, 1)],
    )
    verdict = judge(ledger(4), db)
    assert [m.value for m in verdict.missing] == [3]


def test_a_gap_explained_by_device_offline_is_accepted() -> None:
    # Read 3 was answered by the device but never reached the edge: it recorded the device
    # offline between readings 2 and 4 (no number was spent: no hole).
    offline = DeviceEvent(EDGE, DEVICE, "device_offline", T0 + timedelta(seconds=3))
    db = Database(rows([1, 2, 4], seqs=[0, 1, 2]), device_events=[offline])
    verdict = judge(ledger(4), db)
    assert verdict.clean, verdict.summary()
    assert verdict.explained["device_offline"] == 1


def test_a_device_offline_elsewhere_in_time_explains_nothing() -> None:
    offline = DeviceEvent(EDGE, DEVICE, "device_offline", T0 + timedelta(seconds=30))
    online = DeviceEvent(EDGE, DEVICE, "device_online", T0 + timedelta(seconds=3))
    db = Database(rows([1, 2, 4], seqs=[0, 1, 2]), device_events=[offline, online])
    verdict = judge(ledger(4), db)
    assert [m.value for m in verdict.missing] == [3]


def test_the_read_in_flight_at_a_kill_is_named_by_the_injector() -> None:
    db = Database(rows([1, 2, 4], seqs=[0, 1, 2]))
    assert judge(ledger(4, frozenset({3})), db).clean
    assert not judge(ledger(4, frozenset({2})), db).clean


def test_holes_in_the_events_stream_and_refusals_of_the_fleet_are_caught() -> None:
    db = Database(
        rows([1, 2]),
        event_holes=[(EDGE, EPOCH, 4, 4), ("other-edge", EPOCH, 1, 1)],
        refused=[(EDGE, "not JSON"), ("rogue", "not JSON")],
    )
    verdict = judge(ledger(2), db)
    assert verdict.event_holes == [(EDGE, EPOCH, 4, 4)]
    assert verdict.refused == [(EDGE, "not JSON")]


def test_a_recovery_under_way_is_judged_only_up_to_what_was_produced_by_then() -> None:
    db = Database(rows([1, 2, 3, 7], seqs=[0, 1, 2, 6]))
    through = {(EDGE, DEVICE): 3}
    verdict = judge(ledger(7), db, through)
    assert verdict.clean and verdict.produced == 3
    assert not judge(ledger(7), db, {(EDGE, DEVICE): 4}).clean
