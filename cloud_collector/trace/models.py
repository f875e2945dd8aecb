"""What a trace, a recall and a recall by condition answer: the models the API serialises."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from cloud_collector import queries
from protocols.strict import Strict

Direction = Literal["backward", "forward"]


class Lot(Strict):
    lot_id: int
    gtin: str
    lot_code: str
    quantity: float | None  # the sum of what made it, or else of what received it
    uom: str | None
    origin: str
    batch_id: str | None
    supplier: str | None
    supplier_lot: str | None
    shipped_quantity: float | None = None  # its shipment lines, in its unit of measure
    consumed_quantity: float | None = None  # what batches used of it, in its unit
    quantity_note: str | None = None  # why a quantity is missing or a line not subtracted
    # On hold now (cloud_collector/holds.py): why, since when and who put it.
    held: bool = False
    hold_reason: str | None = None
    held_since: datetime | None = None
    held_by: str | None = None


class Link(Strict):
    """An edge of the walk: the batch made the output lot from (among others) the input."""

    input_lot: int
    output_lot: int
    batch_id: str


class BatchLot(Strict):
    """What a batch used (or made) of one lot in one unit of measure: the sum of its items."""

    lot_id: int
    quantity: float | None  # None: none of the items gave a quantity
    uom: str | None
    items: int  # units and lot lines of the lot the batch's events named
    unquantified: int  # of them, how many gave no quantity


class ShipmentLine(Strict):
    lot_id: int | None
    epc: str | None
    shipment: str | None
    order_id: str | None
    customer_id: str | None
    customer: str | None
    ship_to: str | None
    carrier: str | None
    quantity: float | None
    uom: str | None
    time: datetime
    location: str | None


class Receipt(Strict):
    lot_id: int | None
    epc: str | None
    document: str | None
    supplier: str | None  # the ERP's supplier, else the captured event's source party
    quantity: float | None
    uom: str | None
    time: datetime
    location: str | None
    supplier_id: str | None = None  # that source party's GS1 key, when it named the supplier


class QcResult(Strict):
    batch_id: str | None
    lot_id: int | None
    kind: str
    check_name: str
    value: float | None
    unit: str | None
    passed: bool
    inspector: str | None
    time: datetime


class TracedBatch(Strict):
    batch: queries.Batch
    equipment: list[str]  # the devices whose readings are bound to the batch
    operators: list[str]
    qc: list[QcResult]
    inputs: list[BatchLot]  # what it consumed, per lot
    outputs: list[BatchLot]  # what it produced, per lot
    parameters: list[queries.TagSummary]
    excursions: list[queries.Excursion]


class Trace(Strict):
    direction: Direction
    lot: Lot
    lots: list[Lot]
    links: list[Link]
    batches: list[TracedBatch]
    receipts: list[Receipt]
    shipments: list[ShipmentLine]
    customers: list[dict[str, Any]]
    gaps: list[str]


class AmbiguousLot(Exception):
    def __init__(self, text: str, candidates: list[Lot]) -> None:
        super().__init__(f"{text!r} names {len(candidates)} lots: say which (GTIN + lot)")
        self.candidates = candidates


class UnknownLot(Exception):
    pass


class RecallLine(Strict):
    lot_id: int
    gtin: str
    lot_code: str
    status: Literal["shipped", "on_hand", "unknown"]
    location: str | None
    customer_id: str | None
    customer: str | None
    order_id: str | None
    shipment: str | None
    quantity: float | None
    uom: str | None
    epc: str | None = None  # the unit (pallet SSCC, case SGTIN) it went out as, if one
    # The lot is on hold now (cloud_collector/holds.py): why and since when.
    held: bool = False
    hold_reason: str | None = None
    held_since: datetime | None = None


class PlaceStock(Strict):
    """What the affected lots have on hand at one place, in one unit of measure: the sum of
    the recall's lines that are not shipped (trace.recall.on_hand_by_place)."""

    location: str | None  # None: no place recorded
    uom: str | None
    quantity: float  # of the lines whose quantity is known
    lots: int
    unknown: int  # lines of unknown quantity (a lot that recorded none), not in `quantity`


class Recall(Strict):
    lot: Lot
    affected_lots: int
    lines: list[RecallLine]
    on_hand: list[PlaceStock]  # the lines not shipped, per place and unit
    customers: list[dict[str, Any]]
    gaps: list[str]


class Condition(Strict):
    """Which readings count as the process going wrong, and when to look."""

    tag: str = Field(min_length=1, max_length=64)
    device: str | None = Field(default=None, max_length=64)  # any device with this tag
    condition: Literal["above", "below", "bad_quality"]
    # Required for above / below; a finite number (NaN compares above every reading).
    limit: float | None = Field(default=None, allow_inf_nan=False)
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")

    @model_validator(mode="after")
    def _limit(self) -> Condition:
        if self.condition != "bad_quality" and self.limit is None:
            raise ValueError(f"condition {self.condition!r} needs a limit")
        if self.end <= self.start:
            raise ValueError("'to' must be after 'from'")
        return self

    def described(self) -> str:
        """The condition in words, as a spreadsheet's About sheet names its request."""
        test = "bad quality"
        if self.condition != "bad_quality":
            test = f"{self.condition} {self.limit:g}"
        where = f" on device {self.device}" if self.device else ""
        return (
            f"tag {self.tag}{where} {test}, from {self.start.isoformat()} to {self.end.isoformat()}"
        )


class ConditionBatch(Strict):
    batch_id: str
    line_id: str | None
    readings: int  # how many readings met the condition
    first_time: datetime
    last_time: datetime
    worst: float | None


class ConditionRecall(Strict):
    condition: Condition
    batches: list[ConditionBatch]
    lots: list[Lot]  # the batches' outputs and everything downstream of them
    lines: list[RecallLine]  # the recall list of those lots, as a lot's recall gives it
    on_hand: list[PlaceStock]  # its lines not shipped, per place and unit
    shipments: list[ShipmentLine]
    customers: list[dict[str, Any]]  # per customer: shipments, orders, lots and quantities
    gaps: list[str]
