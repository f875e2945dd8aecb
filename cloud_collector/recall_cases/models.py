"""What a recall case is made of, as the API takes and answers it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, Field, model_validator

from cloud_collector import trace
from protocols.mqtt.contract import storable
from protocols.strict import Strict

MemberKind = Literal["lot", "shipment", "customer", "place"]
ActionKind = Literal[
    "opened",
    "refreshed",
    "notified",
    "returned",
    "held",
    "destroyed",
    "lots_held",
    "exported",
    "closed",
]
CaseState = Literal["open", "closed", "all"]
# FSMA 204 (21 CFR 1.1455(c)(3)(ii)): the records within 24 hours of the FDA's request.
FSMA_204_DEADLINE_S = 24 * 3600


def _said(value: str) -> str:
    value = storable(value).strip()
    if not value:
        raise ValueError("cannot be blank: it is what the next person reads")
    return value


def _in_range(value: datetime) -> datetime:
    # A year the database stores but Python cannot read back (before 1 or after 9999 in
    # UTC) would break every later read of the case.
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not 1900 <= year <= 9998:
        raise ValueError(f"{value.isoformat()} is not a time a recall happens at: check the year")
    return value


Moment = Annotated[AwareDatetime, AfterValidator(_in_range)]
Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_said)]
# A customer's, place's or lot's name as the case lists it, matched exactly (not stripped).
Key = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(storable)]
Note = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_said)]
Quantity = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]


class Member(Strict):
    """One thing the case affects: a lot, a shipment line, a customer or an on-hand place
    (a lot's stock at one place). `key` names it within the case and kind."""

    kind: MemberKind
    key: str
    lot_id: int | None = None
    gtin: str | None = None
    lot_code: str | None = None
    shipment: str | None = None
    order_id: str | None = None
    customer_key: str | None = None  # a shipment's customer, as the customer member's key
    customer: str | None = None
    place: str | None = None
    status: str | None = None  # a place: on_hand, or unknown (a lot of unknown quantity)
    quantity: float | None = None
    uom: str | None = None


class KeptMember(Member):
    """A member as the case keeps it: when it was found, whether it was there at the opening
    and whether the last recomputation still finds it (a member is never dropped)."""

    current_quantity: float | None
    found_at: datetime
    at_opening: bool
    in_current: bool
    checked_at: datetime


class AffectedSet(Strict):
    """The affected set as the recall computes it now, and the gaps it met."""

    members: list[Member]
    gaps: list[str]


class OpenCase(Strict):
    """Open a case from a lot (what the trace endpoints take) or from a process condition
    (what POST /api/v1/recall/by-condition takes), never both."""

    title: Text
    lot: Key | None = None
    condition: trace.Condition | None = None
    drill: bool = False

    @model_validator(mode="after")
    def _one_origin(self) -> OpenCase:
        if (self.lot is None) == (self.condition is None):
            raise ValueError(
                "give either `lot` (the lot the recall starts from) or `condition` (tag, "
                "condition, limit, from, to, as the recall by condition takes them)"
            )
        return self


class Notice(Strict):
    """A customer told of the recall: when, by whom, how."""

    customer: Key  # the customer member's key (its ERP id, or as the case lists it)
    notified_at: Moment
    notified_by: Text
    method: Literal["phone", "email", "letter", "fax", "edi", "in_person", "other"]
    contact: Text | None = None  # the person or address told
    note: Note | None = None


class Return(Strict):
    """Goods a customer sent back (or confirmed destroyed on their side) under the case."""

    customer: Key
    quantity: Quantity
    uom: Text
    lot: Key | None = None  # the lot it was of, if known (what the trace endpoints take)
    received_at: Moment
    note: Note | None = None


class PlaceAction(Strict):
    """Stock at one of the case's places put on hold or destroyed."""

    place: Key
    action: Literal["held", "destroyed"]
    quantity: Quantity
    uom: Text
    lot: Key | None = None
    happened_at: Moment
    note: Note | None = None


class HoldLots(Strict):
    """Put every lot of the case on hold (cloud_collector/holds.py), with the reason."""

    # A hold's reason holds 2,000 characters; "recall case N: " goes before this one.
    reason: Annotated[str, Field(min_length=1, max_length=1900), AfterValidator(_said)]


class Close(Strict):
    summary: Note


class Action(Strict):
    action_id: int
    kind: ActionKind
    at: datetime
    by: str
    happened_at: datetime | None
    customer_key: str | None
    place: str | None
    lot_id: int | None
    quantity: float | None
    uom: str | None
    method: str | None
    contact: str | None
    note: str | None
    detail: dict[str, Any]


class CustomerState(Strict):
    """A customer of the case: what it got, whether and when it was told, what came back."""

    customer_key: str
    customer: str | None
    shipments: list[str]
    shipped: dict[str, float]  # by unit of measure
    notified: bool
    last_notified_at: datetime | None
    returned: dict[str, float]
    found_at: datetime
    at_opening: bool


class PlaceState(Strict):
    """An on-hand place of the case: the stock found there, and what was held or destroyed."""

    place: str
    lots: list[str]
    on_hand: dict[str, float]  # as found, by unit of measure
    current: dict[str, float]  # as the last recomputation says
    held: dict[str, float]
    destroyed: dict[str, float]


class Case(Strict):
    case_id: int
    title: str
    drill: bool
    state: Literal["open", "closed"]
    origin: Literal["lot", "condition"]
    lot_id: int | None  # the lot it was opened from
    gtin: str | None
    lot_code: str | None
    condition: dict[str, Any] | None  # the condition it was opened from
    opened_by: str
    opened_at: datetime
    checked_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    summary: str | None
    # The first complete export of the case's record (with its FSMA 204 spreadsheet), and
    # how long after the opening it was ready: a drill's measure.
    first_export_at: datetime | None
    time_to_export_s: float | None
    within_24h: bool | None


class CaseRecord(Strict):
    """Everything a case says: its affected set (as found at the opening and added since),
    per customer and per place, the gaps of the last recomputation, and every action."""

    case: Case
    members: list[KeptMember]  # every lot, shipment line, customer and place, by kind and key
    customers: list[CustomerState]
    places: list[PlaceState]
    added_since_opening: list[KeptMember]
    no_longer_found: list[KeptMember]
    gaps: list[str]
    actions: list[Action]


class LotsHeld(Strict):
    held: list[int]  # lot ids put on hold now
    already_held: list[int]  # lot ids that were on hold already: their holds stay
