"""RFID gates at dock doors: a reader's raw tag reads, collapsed by the gate's windows into
one observation per tag per read point, become receiving or shipping events of the door."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from device_profiles.schema import RfidReaderProfile
from edge_agent.records import RecordRefused, contract_checked
from edge_agent.stations import Stations
from protocols.mqtt.contract import Item, RfidSighting
from protocols.rfid.epc import decode_epc
from protocols.rfid.gate import Gate, Observation
from protocols.rfid.records import TagRead

log = logging.getLogger(__name__)


def item_of(epc_hex: str) -> Item:
    """The contract Item of a tag: its pure-identity URI and GS1 keys, or, for a tag that
    decodes to nothing, its raw hex and the reason (kept, never dropped). RecordRefused for
    one the contract refuses."""
    decoded = decode_epc(epc_hex)
    with contract_checked("item"):
        if decoded.uri is None:
            return Item(
                raw=decoded.hex,
                unknown_reason=(decoded.reason or "does not decode to an EPC")[:500],
            )
        return Item(
            raw=decoded.hex,
            epc=decoded.uri,
            gtin=decoded.gtin,
            serial=decoded.serial,
            sscc=decoded.sscc,
        )


def sighting_of(o: Observation) -> RfidSighting:
    """How the gate saw a tag; RecordRefused for what the contract refuses."""
    with contract_checked("sighting"):
        return RfidSighting(
            epc_hex=o.epc_hex,
            first_seen=o.first_seen,
            last_seen=o.last_seen,
            count=o.count,
            best_rssi_dbm=o.best_rssi_dbm,
            antennas=list(o.antennas),
            direction=o.direction,
        )


class GateStation:
    """Receives one reader's tag reads (the driver's deliver callback); `tick` closes the
    windows that time has closed even when no further read arrives."""

    def __init__(self, stations: Stations, dock_id: str, profile: RfidReaderProfile) -> None:
        self.stations = stations
        self.dock_id = dock_id
        self.profile = profile
        self.gate = Gate(profile)
        self.refused = 0  # observations the message contract refuses: counted, logged
        self.last_refused: str | None = None

    def __call__(self, reads: list[TagRead]) -> None:
        self._emit(self.gate.add(reads))

    def tick(self, now: datetime) -> None:
        self._emit(self.gate.flush(now))

    def _emit(self, observations: list[Observation]) -> None:
        groups: dict[tuple[str, str | None], list[tuple[Item, RfidSighting]]]
        groups = defaultdict(list)
        for o in observations:
            try:
                item, sighting = item_of(o.epc_hex), sighting_of(o)
            except RecordRefused as err:
                self._refused(f"tag {o.epc_hex[:64]!r}", err)
                continue
            groups[(o.read_point, o.direction)].append((item, sighting))
        for (read_point, direction), group in groups.items():
            try:
                self.stations.dock_event(
                    self.dock_id,
                    [item for item, _ in group],
                    max(s.last_seen for _, s in group),
                    self.profile.name,
                    read_point=read_point,
                    direction=direction,
                    sightings=[s for _, s in group],
                )
            except RecordRefused as err:
                self._refused(f"event of {len(group)} tags at {read_point}", err)

    def _refused(self, what: str, err: Exception) -> None:
        self.refused += 1
        self.last_refused = f"{what}: {err}"[:1000]
        if self.refused <= 10 or self.refused % 100 == 0:  # a noisy reader: no log flood
            log.error("%s: %s refused (%d so far): %s", self.profile.name, what, self.refused, err)
