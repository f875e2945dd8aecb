"""The contract bounds what it lets through: acks say exactly which records are settled
and how, an edge's status carries no unbounded number or text, and a transformation
cannot ask for an unbounded genealogy."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from protocols.mqtt.contract import (
    MAX_LOT_LINKS,
    MAX_REFUSALS,
    Ack,
    EdgeStatus,
    EnvelopeRange,
    ObjectEventRecord,
    Refusal,
    TradingParty,
    TransformationEventRecord,
)

ACK = {"edge_id": "e", "stream": "events", "epoch": "x", "first_seq": 10, "last_seq": 19}


def test_an_ack_without_refusals_settles_nothing_as_refused() -> None:
    assert Ack(**ACK).refused_runs() == []


def test_an_ack_refused_without_runs_refuses_its_whole_range() -> None:
    ack = Ack(**ACK, refused="invalid")
    assert ack.refused_runs() == [Refusal(first_seq=10, last_seq=19, reason="invalid")]


def test_an_ack_with_runs_refuses_exactly_them() -> None:
    runs = [
        Refusal(first_seq=12, last_seq=12, reason="a"),
        Refusal(first_seq=15, last_seq=17, reason="b"),
    ]
    ack = Ack.model_validate_json(Ack(**ACK, refused="2 runs", refusals=runs).model_dump_json())
    assert ack.refused_runs() == runs


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"first_seq": 20}, "first_seq 20 is after last_seq 19"),
        (
            {"refusals": [{"first_seq": 12, "last_seq": 12, "reason": "a"}]},
            "refusals are listed but refused",
        ),
        (
            {"refused": "x", "refusals": [{"first_seq": 9, "last_seq": 12, "reason": "a"}]},
            "not a sorted, disjoint run within 10..19",
        ),
        (
            {
                "refused": "x",
                "refusals": [
                    {"first_seq": 14, "last_seq": 15, "reason": "a"},
                    {"first_seq": 12, "last_seq": 13, "reason": "b"},
                ],
            },
            "not a sorted, disjoint run",
        ),
        ({"last_seq": 2**63}, "less than or equal to 9223372036854775807"),
        (
            {
                "refused": "x",
                "refusals": [
                    {"first_seq": s, "last_seq": s, "reason": "a"} for s in range(10, 10 + 101)
                ],
                "last_seq": 200,
            },
            f"at most {MAX_REFUSALS} items",
        ),
    ],
    ids=["reversed", "runs without summary", "run outside", "unsorted", "past 64 bits", "too many"],
)
def test_an_ack_that_cannot_be_true_is_refused(changes: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Ack.model_validate({**ACK, **changes})


STATUS = {"edge_id": "e", "state": "online", "time": "2026-11-25T10:00:00Z"}


@pytest.mark.parametrize(
    "changes",
    [
        {"outbox_depth": 2**63},
        {"outbox_depth": -1},
        {"outbox_dropped": 2**64},
        {"outbox_oldest_age_s": float("inf")},
        {"quarantined": -5},
        {"version": "v" * 129},
        {"alarms": ["a\u0000"]},
        {"alarms": ["x"] * 1001},
        {"time": "9999-01-01T00:00:00Z"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_an_edge_status_bounds_its_numbers_and_text(changes: dict) -> None:
    with pytest.raises(ValidationError):
        EdgeStatus.model_validate_json(json.dumps({**STATUS, **changes}))


def test_an_envelope_range_needs_numbered_contiguous_records() -> None:
    head = {"edge_id": "e", "stream": "s", "epoch": "x"}
    ranged = EnvelopeRange.model_validate({**head, "records": [{"seq": 4, "x": 1}, {"seq": 5}]})
    assert (ranged.first_seq, ranged.last_seq) == (4, 5)
    for records, reason in [
        ([{"seq": True}], "not a sequence number"),
        ([{"seq": 2**63}], "not a sequence number"),
        ([{"kind": "reading"}], "not a sequence number"),
        ([{"seq": 1}, {"seq": 3}], "expected 2"),
        (["not a record"], "valid dictionary"),
    ]:
        with pytest.raises(ValidationError, match=reason):
            EnvelopeRange.model_validate({**head, "records": records})


def transformation(inputs: int, output_lots: int, output_units: int = 0) -> dict:
    return {
        "seq": 0,
        "time": datetime(2026, 11, 25, tzinfo=UTC),
        "event_id": "t",
        "transformation_id": "b",
        "read_point": "l",
        "line": "l",
        "batch": "b",
        "inputs": [{"epc_class": f"urn:in:{i}", "lot": f"I{i}"} for i in range(inputs)],
        "outputs": [{"epc_class": f"urn:out:{i}", "lot": f"O{i}"} for i in range(output_lots)]
        + [{"epc": f"urn:unit:{i}"} for i in range(output_units)],
    }


def test_a_transformation_bounds_the_links_it_asks_for() -> None:
    TransformationEventRecord.model_validate(transformation(500, 500))  # 250,000: the limit
    TransformationEventRecord.model_validate(transformation(10_000, 1, output_units=9_999))
    with pytest.raises(ValidationError, match=f"more than {MAX_LOT_LINKS:,}"):
        TransformationEventRecord.model_validate(transformation(500, 501))
    with pytest.raises(ValidationError, match="at most 10000 items"):
        TransformationEventRecord.model_validate(transformation(10_001, 1))
    # Pallets of one lot are one lot: 10,000 in x 10,000 out of one lot a side is one link.
    one_lot = transformation(0, 0)
    one_lot["inputs"] = [
        {"epc": f"urn:in:{i}", "lot": "I", "gtin": "1" * 14} for i in range(10_000)
    ]
    one_lot["outputs"] = [
        {"epc": f"urn:out:{i}", "lot": "O", "gtin": "2" * 14} for i in range(10_000)
    ]
    TransformationEventRecord.model_validate(one_lot)


# An object event as an edge of the version before trading parties sent it.
OLD_EDGE_EVENT = {
    "kind": "object_event",
    "seq": 3,
    "time": "2026-11-25T06:00:00Z",
    "event_id": "e-1",
    "action": "OBSERVE",
    "biz_step": "shipping",
    "read_point": "dock-3",
    "items": [{"epc": "https://id.gs1.org/00/106141411234567897"}],
}


def test_trading_parties_are_an_addition_older_edges_and_collectors_still_understand() -> None:
    old = ObjectEventRecord.model_validate_json(json.dumps(OLD_EDGE_EVENT))
    assert old.parties == []
    # Without parties the JSON is the one an older collector reads (extra fields refused).
    assert "parties" not in json.loads(old.model_dump_json())
    assert "parties" not in old.model_dump(mode="json")  # the body a resend is compared with
    shop = {"side": "destination", "type": "location", "gln": "0614141000012", "extension": "7"}
    new = ObjectEventRecord.model_validate(OLD_EDGE_EVENT | {"parties": [shop]})
    assert json.loads(new.model_dump_json())["parties"] == [shop]
    assert new.parties[0].uri() == "https://id.gs1.org/414/0614141000012/254/7"


@pytest.mark.parametrize(
    ("party", "reason"),
    [
        ({"gln": "0614141000013"}, "check digit"),
        ({"gln": "061414100001"}, "pattern"),
        ({"type": "owning_party", "extension": "7"}, r"party \(owning_party\) is named by its GLN"),
        ({"side": "upstream"}, "'source' or 'destination'"),
        ({"extension": "a b"}, "pattern"),
    ],
)
def test_a_trading_party_names_a_real_gln(party: dict, reason: str) -> None:
    base = {"side": "destination", "type": "location", "gln": "0614141000012"}
    with pytest.raises(ValidationError, match=reason):
        TradingParty.model_validate(base | party)
