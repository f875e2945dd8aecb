"""What a scan or a gate read means at its station, turned into trace events.

A line station: batch labels start and end batches, input-lot scans are consumption, output
labels are production, badges name the operator; at batch end one TransformationEvent
links what the batch consumed to what it produced. A dock door: scanning a purchase order
or a shipment document binds the door to it; what passes the gate or is scanned there is
received against the purchase order or loaded against the shipment. Reads at a door bound
to no document are kept and flagged, never dropped.

A door's events say who shipped to whom (EPCIS trading parties) where something names them:
the label scanned (GS1 AIs 410, 412, ... on it), else the document the door is bound to (the
AIs of its scan, or the parties an API call bound with it), else the door's configuration
(DockConfig.parties). The first of these that names a kind of party (side and type) names
all of that kind; the others fill the kinds it does not name.

Everything a station must remember (door bindings, the active batch's inputs, outputs and
operators) is in the edge's store (edge_agent/store.py) with the outbox, so it survives a
restart and changes in the same transaction as the event it causes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from device_profiles.schema import ScanRule
from device_profiles.sites import DockParty, WarehouseStep, WarehouseWork
from edge_agent.binding import NAME_CHARS, Binder, captured_name, name_problem
from edge_agent.holds import HeldLots
from edge_agent.outbox import EVENTS
from edge_agent.records import UNNUMBERED, RecordRefused, contract_checked
from protocols.mqtt.contract import (
    HELD_LOT,
    MAX_PARTIES,
    BizStep,
    BizTransaction,
    Disposition,
    Identifier,
    Item,
    ObjectEventRecord,
    RfidSighting,
    TradingParty,
    TransformationEventRecord,
)

log = logging.getLogger(__name__)

DocumentType = Literal["po", "desadv"]
# A door bound to a purchase order receives; one bound to a shipment (despatch advice) ships.
BIZ_STEP_OF_DOCUMENT: dict[str, BizStep] = {"po": "receiving", "desadv": "shipping"}
BIZ_STEP_OF_DIRECTION: dict[str, BizStep] = {"in": "receiving", "out": "shipping"}
DISPOSITION_OF_STEP: dict[str, Disposition] = {
    "receiving": "in_progress",
    "shipping": "in_transit",
}
DOCUMENT_OF_AI: dict[str, DocumentType] = {"400": "po", "402": "desadv"}
# What a warehouse station's step is as a CBV business step (CBV 2.0 has no "moving": a
# move is storing at the new place, from wherever the goods were).
WAREHOUSE_EVENTS: dict[WarehouseStep, BizStep] = {
    "put_away": "storing",
    "move": "storing",
    "pick": "picking",
    "count": "cycle_counting",
}


def _contract_max(field_name: str) -> int:
    """How many entries the contract lets a TransformationEvent's list hold."""
    meta = TransformationEventRecord.model_fields[field_name].metadata
    return next(int(m.max_length) for m in meta if hasattr(m, "max_length"))


# A batch's genealogy travels as one TransformationEvent at its end: what the contract would
# refuse there is refused at the scan, so that ending the batch can never fail.
MAX_ITEMS = {"input": _contract_max("inputs"), "output": _contract_max("outputs")}
MAX_OPERATORS = _contract_max("operators")


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def identifier_problem(value: str) -> str | None:
    """Why the contract refuses `value` as an identifier (a read point, a place), or None."""
    try:
        _IDENTIFIER.validate_python(value)
    except ValidationError as err:
        return "; ".join(e["msg"] for e in err.errors(include_url=False))
    return None


def check_name(what: str, value: str) -> None:
    """RecordRefused unless the contract accepts `value` as a name."""
    if problem := name_problem(value):
        raise RecordRefused(what, [f"{value[:40]!r}: {problem}"])


@dataclass(frozen=True)
class DockDocument:
    dock_id: str
    type: DocumentType
    doc_id: str
    bound_at: datetime
    bound_by: str
    parties: tuple[DockParty, ...] = ()  # named by the document (its scan or the API call)


def trading_parties(biz_step: BizStep, *named: Sequence[DockParty]) -> list[TradingParty]:
    """The event's parties from what names them, most specific first (label, document,
    door): each kind of party (side, type) from the first that names it."""
    out: list[TradingParty] = []
    for parties in named:
        resolved = [p.at(biz_step) for p in parties]
        taken = {(p.side, p.type) for p in out}
        out += [p for p in resolved if (p.side, p.type) not in taken]
    return out[:MAX_PARTIES]


class StationError(Exception):
    """A request that does not fit the station (unknown dock, nothing bound)."""


class Stations:
    """The lines' and docks' memory beyond the active batch, and the events they emit."""

    def __init__(
        self,
        binder: Binder,
        lines: list[str],
        docks: list[str],
        held: HeldLots | None = None,
        parties: dict[str, list[DockParty]] | None = None,
        warehouse: dict[str, WarehouseWork] | None = None,
    ) -> None:
        self.binder = binder
        # Each door's configured trading parties (DockConfig.parties), by dock id.
        self.parties = parties or {}
        # The lots on hold (edge_agent/holds.py): a shipping door flags them.
        self.held = held
        self.outbox = binder.outbox
        # The store the binder shares with the outbox: reads here, writes in its transaction.
        self.store = binder.store
        self.db = binder.store.db
        self.lines = list(lines)
        self.docks = list(docks)
        self.warehouse = dict(warehouse or {})  # warehouse station id -> what it does
        binder.on_batch_end = self._transformation_event

    # -- warehouse stations --------------------------------------------------------------

    def place(self, station_id: str) -> str | None:
        """Where a warehouse station works now: the place label scanned there last, else
        its configured place."""
        work = self._work(station_id)
        row = self.db.execute(
            "select place from station_place where station_id = ?", (station_id,)
        ).fetchone()
        return str(row[0]) if row else work.place

    def bind_place(self, station_id: str, place: str, by: str) -> None:
        """RecordRefused for a place id the contract would refuse in the events it names."""
        self._work(station_id)
        if problem := identifier_problem(place):
            raise RecordRefused("place", [f"{place[:40]!r}: {problem}"])
        with self.store.transaction() as db:
            db.execute(
                "insert into station_place values (?, ?, ?, ?) on conflict (station_id) do update"
                " set place = excluded.place, bound_at = excluded.bound_at,"
                " bound_by = excluded.bound_by",
                (station_id, place, datetime.now(UTC).isoformat(), by),
            )

    def warehouse_event(
        self,
        station_id: str,
        items: list[Item],
        at: datetime,
        device: str,
        sightings: list[RfidSighting] | None = None,
    ) -> None:
        """Goods scanned or read (an RFID reader's tags) at a warehouse station: put away or
        moved to its place, picked from it (to the station's `to`), or counted there. No
        place yet: the event is kept, flagged `no_place`, at the station itself."""
        work = self._work(station_id)
        place = self.place(station_id)
        step, read_point, location = WAREHOUSE_EVENTS[work.step], station_id, place
        if work.step == "pick":
            read_point, location = place or station_id, work.to
        flags = [] if place is not None else ["no_place"]
        if any(i.unknown_reason for i in items):
            flags.append("unknown_tags")
        self._observed(
            station_id,
            at,
            items,
            device,
            sightings,
            flags,
            biz_step=step,
            read_point=read_point,
            biz_location=location,
        )

    def _observed(
        self,
        station_id: str,
        at: datetime,
        items: list[Item],
        device: str,
        sightings: list[RfidSighting] | None,
        flags: list[str],
        **fields: Any,
    ) -> None:
        """An OBSERVE ObjectEvent of goods at a station (a dock door or a warehouse station)
        by whoever works there now, into the outbox."""
        with contract_checked("object_event"):
            event = ObjectEventRecord(
                seq=UNNUMBERED,
                time=at,
                event_id=uuid.uuid4().hex,
                action="OBSERVE",
                items=items,
                operator=self.operator(station_id),
                device=device,
                sightings=sightings or [],
                flags=flags,
                **fields,
            )
        self.outbox.append(EVENTS, event)

    def _work(self, station_id: str) -> WarehouseWork:
        work = self.warehouse.get(station_id)
        if work is None:
            known = ", ".join(self.warehouse) or "none"
            raise StationError(
                f"warehouse station {station_id!r} is not on this edge (its warehouse "
                f"stations: {known})"
            )
        return work

    # -- docks ---------------------------------------------------------------------------

    def document(self, dock_id: str) -> DockDocument | None:
        self._check_dock(dock_id)
        row = self.db.execute(
            "select b.type, b.doc_id, b.bound_at, b.bound_by, p.parties from dock_binding b"
            " left join dock_document_parties p using (dock_id) where b.dock_id = ?",
            (dock_id,),
        ).fetchone()
        if row is None:
            return None
        named = tuple(DockParty.model_validate(p) for p in json.loads(row[4] or "[]"))
        return DockDocument(dock_id, row[0], row[1], datetime.fromisoformat(row[2]), row[3], named)

    def bind_document(
        self,
        dock_id: str,
        doc_type: DocumentType,
        doc_id: str,
        by: str,
        parties: Sequence[DockParty] = (),
    ) -> DockDocument:
        """RecordRefused for a document id the contract would refuse in the events it
        names (checked now, not at every pallet that passes the door). `parties`: the
        trading parties the document names (its scan's GLN AIs, or the API call's)."""
        self._check_dock(dock_id)
        check_name("document id", doc_id)
        doc = DockDocument(dock_id, doc_type, doc_id, datetime.now(UTC), by, tuple(parties))
        named = json.dumps([p.model_dump(mode="json") for p in parties])
        with self.store.transaction() as db:
            db.execute(
                "insert into dock_binding values (?, ?, ?, ?, ?) on conflict (dock_id) do update"
                " set type = excluded.type, doc_id = excluded.doc_id,"
                " bound_at = excluded.bound_at, bound_by = excluded.bound_by",
                (dock_id, doc_type, doc_id, doc.bound_at.isoformat(), by),
            )
            db.execute(
                "insert into dock_document_parties values (?, ?) on conflict (dock_id)"
                " do update set parties = excluded.parties",
                (dock_id, named),
            )
        return doc

    def unbind_document(self, dock_id: str) -> DockDocument:
        current = self.document(dock_id)
        if current is None:
            raise StationError(f"dock {dock_id} is bound to no document: nothing to release")
        with self.store.transaction() as db:
            db.execute("delete from dock_binding where dock_id = ?", (dock_id,))
            db.execute("delete from dock_document_parties where dock_id = ?", (dock_id,))
        return current

    def dock_event(
        self,
        dock_id: str,
        items: list[Item],
        at: datetime,
        device: str,
        read_point: str | None = None,
        direction: str | None = None,
        sightings: list[RfidSighting] | None = None,
        meaning: str | None = None,
        parties: Sequence[DockParty] = (),
    ) -> None:
        """Units or lots seen at a dock door: received or loaded against its document.
        `parties`: the trading parties the label read names (its GLN AIs)."""
        doc = self.document(dock_id)
        flags: list[str] = []
        biz_step: BizStep
        if doc is not None:
            biz_step = BIZ_STEP_OF_DOCUMENT[doc.type]
        elif meaning in ("receive", "ship"):
            biz_step = "receiving" if meaning == "receive" else "shipping"
            flags.append("no_document")
        elif direction is not None:
            biz_step = BIZ_STEP_OF_DIRECTION[direction]
            flags.append("no_document")
        else:
            biz_step = "receiving"
            flags += ["no_document", "no_direction"]
        if (
            doc is not None
            and direction is not None
            and BIZ_STEP_OF_DIRECTION[direction] != biz_step
        ):
            flags.append(f"direction_{direction}_against_{doc.type}")
        if any(i.unknown_reason for i in items):
            flags.append("unknown_tags")
        held = self.held.match(items) if self.held and biz_step == "shipping" else []
        if held:
            # Said at once, where it happens: the log, the edge's alarms (its status, the
            # fleet view) and the event itself, whose flag raises the collector's alert.
            flags.append(HELD_LOT)
            doc_text = f" against {doc.type} {doc.doc_id}" if doc else ""
            text = (
                f"HELD LOT at {dock_id}{doc_text}: "
                + "; ".join(h.describe() for h in held[:10])
                + (f" and {len(held) - 10} more" if len(held) > 10 else "")
                + ": stop the loading"
            )
            log.error("%s", text)
            if self.held is not None:
                self.held.alarm(text[:2000], at)
        self._observed(
            dock_id,
            at,
            items,
            device,
            sightings,
            flags,
            biz_step=biz_step,
            disposition=DISPOSITION_OF_STEP.get(biz_step),
            read_point=read_point or dock_id,
            biz_location=dock_id,
            biz_transactions=[BizTransaction(type=doc.type, id=doc.doc_id)] if doc else [],
            parties=trading_parties(
                biz_step, parties, doc.parties if doc else (), self.parties.get(dock_id, [])
            ),
        )

    # -- lines ---------------------------------------------------------------------------

    def operator(self, line_id: str) -> str | None:
        """Who works at a station (line or dock door) now, from their last badge scan."""
        row = self.db.execute(
            "select operator from line_operator where line_id = ?", (line_id,)
        ).fetchone()
        return row[0] if row else None

    def set_operator(self, line_id: str, operator: str) -> None:
        check_name("operator", operator)
        with self.store.transaction() as db:
            db.execute(
                "insert into line_operator values (?, ?) on conflict (line_id)"
                " do update set operator = excluded.operator",
                (line_id, operator),
            )
            active = self.binder.context.active(line_id)
            if active is not None:
                self._remember(line_id, active.batch_id, "operator", operator)

    def line_item(
        self,
        line_id: str,
        role: Literal["input", "output"],
        item: Item,
        at: datetime,
        device: str,
        once: bool = False,
    ) -> None:
        """An input consumed into, or an output produced by, the line's active batch.
        RecordRefused for one more item than a TransformationEvent holds. `once`: a unit
        the batch already has in this role is not added again (an RFID tag read anew)."""
        active = self.binder.context.active(line_id)
        if active is None:
            # Not lost: kept as an event of its own, flagged for the quality team.
            with contract_checked("object_event"):
                event = ObjectEventRecord(
                    seq=UNNUMBERED,
                    time=at,
                    event_id=uuid.uuid4().hex,
                    action="OBSERVE",
                    biz_step="consuming" if role == "input" else "commissioning",
                    read_point=line_id,
                    items=[item],
                    line=line_id,
                    operator=self.operator(line_id),
                    device=device,
                    flags=["no_active_batch"],
                )
            self.outbox.append(EVENTS, event)
            return
        value = item.model_dump_json()
        if (
            once
            and self.db.execute(
                "select 1 from batch_items where line_id = ? and batch_id = ? and role = ?"
                " and item = ?",
                (line_id, active.batch_id, role, value),
            ).fetchone()
        ):
            return
        held = self.db.execute(
            "select count(*) from batch_items where line_id = ? and batch_id = ? and role = ?",
            (line_id, active.batch_id, role),
        ).fetchone()[0]
        if held >= MAX_ITEMS[role]:
            raise RecordRefused(
                "item",
                [
                    f"batch {active.batch_id} already has {held} {role}s, the most one "
                    "TransformationEvent carries: end the batch and start the next"
                ],
            )
        self._remember(line_id, active.batch_id, role, value)

    def scan_batch(
        self, line_id: str, meaning: str, batch_id: str, device: str, at: datetime
    ) -> None:
        if meaning != "batch_end":
            check_name("batch id", batch_id)  # before the running batch is ended for it
        by = self.operator(line_id) or f"scanner:{device}"[:NAME_CHARS]
        active = self.binder.context.active(line_id)
        if meaning == "batch_end":
            if active is not None:
                self.binder.end_batch(line_id, by, at)
            return
        if active is not None and active.batch_id == batch_id:
            return  # the same label scanned twice
        if active is not None:
            self.binder.end_batch(line_id, by, at)
        self.binder.start_batch(line_id, batch_id, by, at)
        operator = self.operator(line_id)
        if operator is not None:
            self._remember(line_id, batch_id, "operator", operator)

    def _remember(self, line_id: str, batch_id: str, role: str, value: str) -> None:
        row = self.db.execute(
            "select coalesce(max(position) + 1, 0) from batch_items"
            " where line_id = ? and batch_id = ? and role = ?",
            (line_id, batch_id, role),
        ).fetchone()
        if role == "operator" and (
            row[0] >= MAX_OPERATORS
            or self.db.execute(
                "select 1 from batch_items where line_id = ? and batch_id = ? and role = ?"
                " and item = ?",
                (line_id, batch_id, role, value),
            ).fetchone()
        ):
            return  # known already, or as many as the event holds: the badge scan still counts
        with self.store.transaction() as db:
            db.execute(
                "insert into batch_items values (?, ?, ?, ?, ?)",
                (line_id, batch_id, role, row[0], value),
            )

    def _transformation_event(
        self, line_id: str, batch_id: str, started_at: datetime, at: datetime
    ) -> None:
        """Called by the binder inside the transaction that ends the batch."""
        rows = self.db.execute(
            "select role, item from batch_items where line_id = ? and batch_id = ?"
            " order by role, position",
            (line_id, batch_id),
        ).fetchall()
        flags = []
        with contract_checked("transformation_event"):
            inputs = [Item.model_validate_json(item) for role, item in rows if role == "input"]
            outputs = [Item.model_validate_json(item) for role, item in rows if role == "output"]
            operators = [item for role, item in rows if role == "operator"]
            if not inputs:
                flags.append("no_inputs")
            if not outputs:
                # The batch itself is the output lot; its product is not known at the line.
                outputs = [Item(lot=batch_id[:20], raw=batch_id)]
                flags.append("output_without_gtin")
            event = TransformationEventRecord(
                seq=UNNUMBERED,
                time=at,
                event_id=uuid.uuid4().hex,
                transformation_id=batch_id,
                read_point=line_id,
                line=line_id,
                batch=batch_id,
                inputs=inputs,
                outputs=outputs,
                operators=operators,
                started_at=started_at,
                flags=flags,
            )
        with self.store.transaction() as db:  # joins the binder's: the batch's end
            self.outbox.append(EVENTS, event)
            db.execute(
                "delete from batch_items where line_id = ? and batch_id = ?", (line_id, batch_id)
            )

    def _check_dock(self, dock_id: str) -> None:
        if dock_id not in self.docks:
            docks = ", ".join(self.docks) or "none"
            raise StationError(f"dock {dock_id!r} is not on this edge (its docks: {docks})")


def rule_document_type(rule: ScanRule, ais: dict[str, str]) -> DocumentType | None:
    if rule.document is not None:
        return rule.document
    for ai, doc_type in DOCUMENT_OF_AI.items():
        if ai in ais:
            return doc_type
    return None


def batch_label(text: str, ais: dict[str, str]) -> str:
    """The batch id a batch label names: its GS1 lot (AI 10) if it has one, else the text
    (without a scanner's control characters)."""
    return ais.get("10") or captured_name(text)
