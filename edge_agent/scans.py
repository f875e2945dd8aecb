"""What a barcode scan does at its station: the profile's rules give its meaning, the
stations turn it into batch changes, genealogy links and dock events."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from device_profiles.sites import DockParty
from edge_agent.binding import captured_name
from edge_agent.records import RecordRefused, contract_checked
from edge_agent.stations import Stations, batch_label, rule_document_type
from protocols.mqtt.contract import Item, PartyType
from protocols.scanner.client import Scan
from protocols.scanner.gs1 import Gs1Scan
from protocols.scanner.profile import ScannerProfileBase
from protocols.scanner.rules import meaning_of

log = logging.getLogger(__name__)

DIGITAL_LINK = "https://id.gs1.org"

# GS1 GLN application identifiers on a dock's document or label -> the EPCIS trading party
# each names (side, CBV type). 410-413 name the two ends whichever door reads them; 414 is
# a place, not an end: a location label at the door names the door's own place, so it
# stands on our side (where goods leave from, or arrive at). 254 is a 414's extension.
PARTY_OF_AI: dict[str, tuple[Literal["source", "destination", "ours"], PartyType]] = {
    "410": ("destination", "location"),  # ship to - deliver to
    "411": ("destination", "owning_party"),  # bill to - invoice to: the buyer
    "412": ("source", "owning_party"),  # purchased from: the seller
    "413": ("destination", "location"),  # ship for - deliver for - forward to
    "414": ("ours", "location"),  # identification of a physical location
}
LINE_MEANINGS = {"batch_start", "batch_end", "consume", "produce"}  # operator: anywhere
DOCK_MEANINGS = {"document", "receive", "ship"}
WAREHOUSE_MEANINGS = {"place", "stock"}


def item_of(gs1: Gs1Scan) -> Item:
    """The contract Item a GS1 scan identifies, as a canonical GS1 Digital Link URI plus its
    plain keys (so the genealogy joins on GTIN + lot whatever the label's form).
    RecordRefused for one the contract refuses (the scan is kept in the station's status)."""
    item: dict[str, Any] = {"raw": gs1.raw}
    if gs1.sscc:
        item |= {"epc": f"{DIGITAL_LINK}/00/{gs1.sscc}", "sscc": gs1.sscc}
    elif gs1.gtin and gs1.serial:
        item |= {"epc": f"{DIGITAL_LINK}/01/{gs1.gtin}/21/{gs1.serial}", "serial": gs1.serial}
    elif gs1.gtin and gs1.lot:
        item["epc_class"] = f"{DIGITAL_LINK}/01/{gs1.gtin}/10/{gs1.lot}"
    elif gs1.gtin:
        item["epc_class"] = f"{DIGITAL_LINK}/01/{gs1.gtin}"
    if gs1.gtin:
        item["gtin"] = gs1.gtin
    if gs1.lot:
        item["lot"] = gs1.lot
    if gs1.quantity is not None:
        item |= {"quantity": float(gs1.quantity), "uom": "EA"}
    if gs1.expiry is not None:
        item["expiry"] = gs1.expiry.isoformat()  # FEFO at the collector
    if gs1.errors:
        item["unknown_reason"] = "; ".join(gs1.errors)[:500]
    with contract_checked("item"):
        return Item.model_validate(item)


def parties_of(gs1: Gs1Scan) -> list[DockParty]:
    """The trading parties a GS1 scan names (PARTY_OF_AI), in the table's order.
    RecordRefused for one the contract refuses."""
    with contract_checked("trading party"):
        return [
            DockParty(
                side=side,
                type=kind,
                gln=gs1.ais[ai],
                extension=gs1.ais.get("254") if ai == "414" else None,
            )
            for ai, (side, kind) in PARTY_OF_AI.items()
            if ai in gs1.ais
        ]


def place_label(gs1: Gs1Scan) -> str:
    """The place a location label names: a GS1 location label's GLN (AI 414) with its
    extension (AI 254) as `{gln}.{extension}`, else the label's text (a bin code)."""
    if "414" in gs1.ais:
        extension = gs1.ais.get("254")
        return f"{gs1.ais['414']}.{extension}" if extension else gs1.ais["414"]
    return captured_name(gs1.text)


@dataclass
class ScanCounters:
    scans: int = 0
    unmatched: int = 0  # no rule of the profile matched: logged, not an event
    misplaced: int = 0  # a line meaning at a dock or the reverse: the profile is wrong
    refused: int = 0  # what the scan names, the message contract refuses (too long, ...)
    misread: int = 0  # looked like GS1 data but is not well-formed: never matched to a rule
    last_unmatched: list[str] = field(default_factory=list)
    last_misread: list[str] = field(default_factory=list)
    last_refused: list[str] = field(default_factory=list)


class ScanStation:
    """Receives one scanner's scans (the driver's deliver callback)."""

    def __init__(
        self, stations: Stations, station_id: str, is_dock: bool, profile: ScannerProfileBase
    ) -> None:
        self.stations = stations
        self.station_id = station_id
        self.is_dock = is_dock
        self.profile = profile
        self.counters = ScanCounters()

    def __call__(self, scans: list[Scan]) -> None:
        for scan in scans:
            self.counters.scans += 1
            try:
                self._one(scan)
            except RecordRefused as err:
                # The scan is kept where it can be looked at (status), the scanner goes on.
                c = self.counters
                c.refused += 1
                c.last_refused = [*c.last_refused[-9:], f"{scan.text[:100]!r}: {err}"[:600]]
                if c.refused <= 10 or c.refused % 100 == 0:  # a jammed scanner: no log flood
                    log.error(
                        "%s: scan %r refused (%d so far): %s",
                        self.profile.name,
                        scan.text[:100],
                        c.refused,
                        err,
                    )

    def _one(self, scan: Scan) -> None:
        device, at, gs1, here = self.profile.name, scan.time, scan.gs1, self.station_id
        if gs1.misread is not None:
            # A damaged label is not a work order or a badge: the operator must scan again.
            self.counters.misread += 1
            seen = f"{scan.text}: {gs1.misread}"[:500]
            self.counters.last_misread = [*self.counters.last_misread[-9:], seen]
            log.warning("%s: misread %r: %s (scan it again)", device, scan.text, gs1.misread)
            return
        rule = meaning_of(gs1, self.profile.rules)
        if rule is None:
            self.counters.unmatched += 1
            self.counters.last_unmatched = [*self.counters.last_unmatched[-9:], scan.text]
            log.warning("%s: scan %r matches no rule of the profile: ignored", device, scan.text)
            return
        meaning = rule.meaning
        warehouse = here in self.stations.warehouse
        if warehouse:
            elsewhere, kind = LINE_MEANINGS | DOCK_MEANINGS, "warehouse station"
        else:
            elsewhere = WAREHOUSE_MEANINGS | (DOCK_MEANINGS if not self.is_dock else LINE_MEANINGS)
            kind = "dock" if self.is_dock else "line"
        if meaning in elsewhere:
            self.counters.misplaced += 1
            log.error(
                "%s: a %r scan at %s %s: fix the profile's rules", device, meaning, kind, here
            )
            return
        if meaning in ("batch_start", "batch_end"):
            self.stations.scan_batch(here, meaning, batch_label(gs1.text, gs1.ais), device, at)
        elif meaning == "operator":
            self.stations.set_operator(here, captured_name(gs1.text))
        elif meaning == "place":
            self.stations.bind_place(here, place_label(gs1), f"scanner:{device}")
        elif meaning == "stock":
            self.stations.warehouse_event(here, [item_of(gs1)], at, device)
        elif meaning in ("consume", "produce"):
            role: Literal["input", "output"] = "input" if meaning == "consume" else "output"
            self.stations.line_item(here, role, item_of(gs1), at, device)
        elif meaning == "document":
            doc_type = rule_document_type(rule, gs1.ais)
            if doc_type is None:
                self.counters.misplaced += 1
                log.error(
                    "%s: document scan %r is neither AI 400 nor 402 and its rule names no "
                    "document type: set `document: po|desadv` on the rule",
                    device,
                    gs1.text,
                )
                return
            doc_id = gs1.purchase_order or gs1.shipment_id or captured_name(gs1.text)
            named = parties_of(gs1)
            self.stations.bind_document(here, doc_type, doc_id, f"scanner:{device}", named)
        else:  # receive, ship
            item, named = item_of(gs1), parties_of(gs1)
            self.stations.dock_event(here, [item], at, device, meaning=meaning, parties=named)
