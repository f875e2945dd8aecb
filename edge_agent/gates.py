"""RFID readers at dock doors, production lines and warehouse stations: a reader's raw tag
reads, collapsed by the gate's windows into one observation per tag per read point, become
receiving or shipping events of a door; at a line, the units its active batch consumed
(read at the infeed) or produced (read at the outfeed), each antenna's `line_feed` saying
which; at a warehouse station, what its step does with goods (stored, picked, counted)."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import Literal

from edge_agent.records import RecordRefused, contract_checked
from edge_agent.stations import Stations
from protocols.mqtt.contract import Item, RfidSighting
from protocols.rfid.epc import decode_epc
from protocols.rfid.gate import Gate, Observation
from protocols.rfid.profile import RfidReader
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

    def __init__(self, stations: Stations, station_id: str, profile: RfidReader) -> None:
        self.stations = stations
        self.station_id = station_id  # a dock door (a line: LineReaderStation)
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
                    self.station_id,
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


# Tags a line reader remembers as already reported while its line is idle (a pallet left at
# the infeed between batches is flagged once, not once a window); past this it starts over.
IDLE_MEMORY = 10_000


class LineReaderStation(GateStation):
    """An RFID reader at a production line. What a tag read there means, after the domain's
    line (shared/domain.md, "Production line"): the tagged units loaded at the infeed are
    the inputs the active batch consumes, those leaving at the outfeed its outputs: the
    same links an operator's consume or produce scan makes, into the batch's
    TransformationEvent. A unit read again in the same batch counts once. Read while the
    line runs no batch, it is kept as an event of its own flagged `no_active_batch`
    (Stations.line_item), once until a batch starts."""

    def __init__(self, stations: Stations, line_id: str, profile: RfidReader) -> None:
        super().__init__(stations, line_id, profile)
        self.feed: dict[int, Literal["input", "output"]] = {
            a.port: a.line_feed for a in profile.antennas
        }
        self._idle_seen: set[tuple[str, str]] = set()

    def _emit(self, observations: list[Observation]) -> None:
        for o in observations:
            role = self.feed.get(o.antennas[0], "input") if o.antennas else "input"
            try:
                item = item_of(o.epc_hex)
            except RecordRefused as err:
                self._refused(f"tag {o.epc_hex[:64]!r}", err)
                continue
            line = self.station_id
            if self.stations.binder.context.active(line) is None:
                if (o.epc_hex, role) in self._idle_seen:
                    continue
                if len(self._idle_seen) >= IDLE_MEMORY:
                    self._idle_seen.clear()
                self._idle_seen.add((o.epc_hex, role))
            else:
                self._idle_seen.clear()
            try:
                self.stations.line_item(line, role, item, o.last_seen, self.profile.name, once=True)
            except RecordRefused as err:
                self._refused(f"{role} tag {o.epc_hex[:64]!r} at {line}", err)


class WarehouseReaderStation(GateStation):
    """An RFID reader at a warehouse station (a put-away lane's portal, a reader over a
    bin): the tags first read within one window of each other are one event of the
    station's step, made as a scan's is (Stations.warehouse_event). Each tag's window
    closes on its own, so the first closed waits for those read with it: a pallet's cases
    are one put-away, not one per tick. A tag seen at two read points is one item: the
    station, not the antenna, says where the goods are."""

    def __init__(self, stations: Stations, station_id: str, profile: RfidReader) -> None:
        super().__init__(stations, station_id, profile)
        self._pending: dict[str, Observation] = {}  # closed, by EPC, for the next event

    def _emit(self, observations: list[Observation]) -> None:
        for o in observations:
            self._pending.setdefault(o.epc_hex, o)
        if not self._pending:
            return
        started = min(o.first_seen for o in self._pending.values())
        if self.gate.open_before(started + self.gate.window):
            return
        pending, self._pending = list(self._pending.values()), {}
        group: list[tuple[Item, RfidSighting]] = []
        for o in pending:
            try:
                group.append((item_of(o.epc_hex), sighting_of(o)))
            except RecordRefused as err:
                self._refused(f"tag {o.epc_hex[:64]!r}", err)
        if not group:
            return
        try:
            self.stations.warehouse_event(
                self.station_id,
                [item for item, _ in group],
                max(s.last_seen for _, s in group),
                self.profile.name,
                sightings=[s for _, s in group],
            )
        except RecordRefused as err:
            self._refused(f"event of {len(group)} tags at {self.station_id}", err)
