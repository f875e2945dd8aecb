"""The edge's records: contract models, checked as they are built, numbered by the outbox."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter

from edge_agent.outbox import numbered
from edge_agent.records import (
    RECORD_MODELS,
    UNNUMBERED,
    EdgeRecord,
    RecordRefused,
    contract_checked,
)
from protocols.mqtt.contract import (
    BatchEvent,
    BizTransaction,
    DeviceEvent,
    Item,
    ObjectEventRecord,
    Reading,
    ReadingsDropped,
    Record,
    RfidSighting,
    TagSpec,
    TagSpecs,
    TransformationEventRecord,
)

AT = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
RECORD: TypeAdapter[Record] = TypeAdapter(Record)
LOT = Item(epc_class="https://id.gs1.org/01/09506000134352/10/L7", gtin="09506000134352", lot="L7")

# One record of every kind the edge makes, as the edge builds it.
EVERY_KIND: list[EdgeRecord] = [
    Reading(seq=UNNUMBERED, time=AT, line="l", batch="B-1", device="d", tag="t", value=1.5),
    Reading(
        seq=UNNUMBERED,
        time=AT,
        device_time=AT,
        line="l",
        batch=None,
        device="d",
        tag="t",
        value=None,
        quality="bad",
        detail="comm fault",
    ),
    BatchEvent(seq=UNNUMBERED, kind="batch_ended", time=AT, line="l", batch="B-1", by="op"),
    DeviceEvent(seq=UNNUMBERED, kind="device_offline", time=AT, line="l", device="d"),
    ReadingsDropped(
        seq=UNNUMBERED,
        time=AT,
        stream="readings",
        count=5,
        first_seq=0,
        last_seq=9,
        policy="thin_oldest",
    ),
    ObjectEventRecord(
        seq=UNNUMBERED,
        time=AT,
        event_id="e1",
        action="OBSERVE",
        biz_step="receiving",
        read_point="dock-1",
        items=[LOT, Item(raw="E280", unknown_reason="no EPC header")],
        biz_transactions=[BizTransaction(type="po", id="PO-1")],
        sightings=[
            RfidSighting(epc_hex="E280", first_seen=AT, last_seen=AT, count=3, antennas=[1])
        ],
    ),
    TransformationEventRecord(
        seq=UNNUMBERED,
        time=AT,
        event_id="e2",
        transformation_id="B-1",
        read_point="l",
        line="l",
        batch="B-1",
        inputs=[LOT],
        outputs=[Item(lot="B-1", raw="B-1")],
        started_at=AT,
    ),
    TagSpecs(seq=UNNUMBERED, time=AT, specs=[TagSpec(device="d", tag="t", low=1.0, high=2.0)]),
]


def test_every_record_model_is_one_the_edge_builds() -> None:
    assert {type(r) for r in EVERY_KIND} == set(RECORD_MODELS)


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda r: str(r.kind))
@pytest.mark.parametrize("seq", [0, 1, 10, 123_456_789, 2**63 - 1])
def test_the_outbox_numbers_exactly_what_the_model_serialises(record: EdgeRecord, seq: int) -> None:
    """The outbox's splice gives what the model with its number serialises, byte for byte:
    this fails if the contract ever moves `seq` from second place."""
    body = numbered(record.model_dump_json(), seq)
    assert body == record.model_copy(update={"seq": seq}).model_dump_json()
    assert RECORD.validate_json(body) == record.model_copy(update={"seq": seq})


def test_a_record_built_with_a_number_of_its_own_is_not_numbered_again() -> None:
    with pytest.raises(ValueError, match="not a record built UNNUMBERED"):
        numbered(EVERY_KIND[2].model_copy(update={"seq": 4}).model_dump_json(), 5)


def event(**changed: object) -> BatchEvent:
    fields: dict[str, object] = {"seq": UNNUMBERED, "kind": "batch_started", "time": AT}
    return BatchEvent(**(fields | {"line": "l", "batch": "B", "by": "op"} | changed))  # type: ignore[arg-type]


def reading(**changed: object) -> Reading:
    fields: dict[str, object] = {"seq": UNNUMBERED, "time": AT, "line": "l", "batch": None}
    fields |= {"device": "d", "tag": "t", "value": 1.0}
    return Reading(**(fields | changed))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: event(batch="B\x00\x00"), "batch: Value error, text contains a NUL"),
        (lambda: event(by="x" * 129), "by: String should have at most 128 characters"),
        (lambda: reading(value=float("nan")), "value: Input should be a finite number"),
        (lambda: reading(value=None), "must have a value"),
        (lambda: reading(time=datetime(2026, 1, 1)), "time: Value error, timestamp must"),
        (lambda: reading(time=datetime(9999, 1, 1, tzinfo=UTC)), "outside 2000-2099"),
        (lambda: reading(line="line 1"), "line: String should match pattern"),
        (lambda: reading(colour="red"), "colour: Extra inputs are not permitted"),
        (lambda: Item(quantity=1.0), "an item needs epc, epc_class or at least its raw"),
    ],
)
def test_a_record_the_contract_refuses_cannot_be_built_and_the_refusal_names_the_field(
    build: object, named: str
) -> None:
    with pytest.raises(RecordRefused) as refused, contract_checked("some_kind"):
        build()  # type: ignore[operator]
    assert named in str(refused.value), str(refused.value)
    assert str(refused.value).startswith(
        "some_kind record refused by the message contract (trace.v1)"
    )
