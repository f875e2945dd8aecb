"""Trading parties of events: a captured event's `sourceList` and `destinationList` (EPCIS
2.0 section 7.3.5.4, types from CBV 2.0 section 8.5) read, checked and stored per event
(`event_parties`, migration 0026), so that a receipt has a supplier and a shipment a
customer (cloud_collector/trace/walk.py names them). Our own edges' dock events carry theirs
in the contract (`parties`, TradingParty), stored the same way by the ingest (`of_record`),
each named by its GS1 Digital Link.

What each CBV type's identifier must be: a party (owning or possessing) is a PGLN, or an
SGLN / GLN as EPCIS 1.x documents and GS1's own examples still name parties; a location is
an SGLN or GLN. Either in the URN or the Digital Link form (protocols/gs1). A type outside
the CBV (a private URI) is kept as sent, with no GS1 key. Anything else refuses the whole
document with the JSON path of the field, as the other checks do (document.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloud_collector.epcis.document import InvalidDocument
from cloud_collector.epcis.identifiers import cbv_word
from protocols import gs1
from protocols.mqtt.contract import TradingParty

INSERT = """
insert into event_parties (event_id, side, position, type, party, gln, extension, key)
values (%s, %s, %s, %s, %s, %s, %s, %s)
"""

# CBV source/destination type -> the GS1 key kinds its identifier may be.
KEY_KINDS: dict[str, tuple[gs1.Kind, ...]] = {
    "owning_party": ("pgln", "sgln", "gln"),
    "possessing_party": ("pgln", "sgln", "gln"),
    "location": ("sgln", "gln"),
}
# Which party stands for the supplier (source) or the customer (destination), best first:
# who owns the goods says more than who holds them, and both more than where they were.
PREFERENCE = ("owning_party", "possessing_party", "location")
SIDES = {"sourceList": ("source", "source"), "destinationList": ("destination", "destination")}
# An event names a handful; a list longer than this is no trading party but a payload.
MAX_PER_LIST = 64
MAX_ID_LENGTH = 500  # as a location id (erp.Location)


@dataclass(frozen=True, slots=True)
class Party:
    side: str  # source | destination
    position: int
    type: str  # the CBV word, or the private type URI as sent
    party: str  # the identifier as sent
    gln: str | None  # its GLN, when a GS1 key
    extension: str | None  # an SGLN's extension (None for the whole GLN)
    key: str | None  # the GS1 key as an element string: how a party without a name shows


def _key(identifier: str) -> gs1.Key | None:
    if identifier.startswith("urn:"):
        return gs1.from_urn(identifier)
    if identifier.startswith(("http://", "https://")):
        return gs1.from_digital_link(identifier)
    return None


def of_event(event: dict[str, Any], where: str) -> list[Party]:
    """The event's trading parties in document order; InvalidDocument naming the field
    (`where` is the event's JSON path) for one that is not what its CBV type asks."""
    found: list[Party] = []
    for field, (side, id_field) in SIDES.items():
        entries = event.get(field) or []
        if len(entries) > MAX_PER_LIST:
            raise InvalidDocument(
                f"{where}.{field}",
                f"{len(entries)} entries, more than the {MAX_PER_LIST} an event may name",
            )
        for position, entry in enumerate(entries):
            path = f"{where}.{field}[{position}].{id_field}"
            identifier = str(entry.get(id_field, ""))
            kind = cbv_word("sourceDestType", str(entry.get("type", ""))) or ""
            if len(identifier) > MAX_ID_LENGTH:
                raise InvalidDocument(
                    path, f"longer than {MAX_ID_LENGTH} characters: name the party by its GLN"
                )
            key = _key(identifier)
            allowed = KEY_KINDS.get(kind)
            if allowed is not None and (key is None or key.kind not in allowed):
                forms = " or ".join(k.upper() for k in allowed)
                raise InvalidDocument(
                    path,
                    f"{identifier!r} is not a {forms}: a {kind} {side} is named by its GS1 key, "
                    "as a URN (urn:epc:id:pgln:0614141.00000, urn:epc:id:sgln:0614141.00001.0) "
                    "or a GS1 Digital Link (https://id.gs1.org/417/0614141000005, "
                    ".../414/0614141000012/254/1)",
                )
            gln = key.gln if key is not None and key.kind in ("pgln", "sgln", "gln") else None
            found.append(
                Party(
                    side=side,
                    position=position,
                    type=kind,
                    party=identifier,
                    gln=gln,
                    extension=key.extension if gln and key else None,
                    key=gs1.element_string(key) if gln and key else None,
                )
            )
    return found


def rows(event_id: str, event: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The event_parties rows of a checked event (document.check has refused bad ones)."""
    return [
        (event_id, p.side, p.position, p.type, p.party, p.gln, p.extension, p.key)
        for p in of_event(event, "$")
    ]


def of_record(event_id: str, parties: Sequence[TradingParty]) -> list[tuple[Any, ...]]:
    """The event_parties rows of an edge's event (the contract has checked each GLN)."""
    position = {"source": 0, "destination": 0}
    out: list[tuple[Any, ...]] = []
    for p in parties:
        key = gs1.element_string(p.key())
        out.append((event_id, p.side, position[p.side], p.type, p.uri(), p.gln, p.extension, key))
        position[p.side] += 1
    return out
