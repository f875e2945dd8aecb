"""Dozens of reads per second at a gate -> one observation per tag, read point and window.

Pure: time comes from the reads and from the caller of `flush`, never from a clock here.

A window opens with a tag's first read at a read point and lasts `window_s` (from the
profile): every read of that tag at that read point inside it joins the same observation.
The observation is handed out once its window has closed, which `add` notices from the
time of newer reads and `flush(now)` from the caller's time. Direction comes from the
sides of the antennas: first seen outside and last seen inside is "in", the reverse
"out"; anything else (one side only, antennas without a side) is None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from protocols.rfid.profile import RfidAntenna, RfidReader
from protocols.rfid.records import TagRead

Direction = Literal["in", "out"]
Side = Literal["outside", "inside"] | None


@dataclass(frozen=True, slots=True)
class Observation:
    epc_hex: str
    read_point: str
    first_seen: datetime
    last_seen: datetime
    count: int  # reads that made it
    best_rssi_dbm: float | None  # the strongest read; None if the reader sends no RSSI
    antennas: tuple[int, ...]  # antenna ports, in the order they first saw the tag
    direction: Direction | None


@dataclass(slots=True)
class _Open:
    epc_hex: str
    read_point: str
    first_seen: datetime
    last_seen: datetime
    first_side: Side
    last_side: Side
    count: int = 0
    best_rssi_dbm: float | None = None
    antennas: list[int] = field(default_factory=list)

    def close(self) -> Observation:
        direction: Direction | None = None
        if self.first_side == "outside" and self.last_side == "inside":
            direction = "in"
        elif self.first_side == "inside" and self.last_side == "outside":
            direction = "out"
        return Observation(
            self.epc_hex,
            self.read_point,
            self.first_seen,
            self.last_seen,
            self.count,
            self.best_rssi_dbm,
            tuple(self.antennas),
            direction,
        )


@dataclass(slots=True)
class GateCounters:
    reads: int = 0  # reads offered to the gate
    too_weak: int = 0  # ignored: below min_rssi_dbm
    unknown_antenna: int = 0  # ignored: from a port the profile does not list
    observations: int = 0  # observations handed out


class Gate:
    def __init__(self, profile: RfidReader) -> None:
        self.window = timedelta(seconds=profile.window_s)
        self.min_rssi_dbm = profile.min_rssi_dbm
        self._antennas: dict[int, RfidAntenna] = {a.port: a for a in profile.antennas}
        self._open: dict[tuple[str, str], _Open] = {}
        self.counters = GateCounters()
        # Ports heard that the profile does not list, with how often: tells a technician
        # which antenna to add (or which cable is on the wrong port).
        self.unknown_ports: dict[int, int] = {}

    def add(self, reads: Iterable[TagRead]) -> list[Observation]:
        """Take reads in; return the observations whose window closed by the newest read."""
        closed: list[Observation] = []
        newest: datetime | None = None
        for read in reads:
            self.counters.reads += 1
            antenna = self._antennas.get(read.antenna)
            if antenna is None:
                self.counters.unknown_antenna += 1
                self.unknown_ports[read.antenna] = self.unknown_ports.get(read.antenna, 0) + 1
                continue
            if (
                self.min_rssi_dbm is not None
                and read.rssi_dbm is not None
                and read.rssi_dbm < self.min_rssi_dbm
            ):
                self.counters.too_weak += 1
                continue
            newest = read.time if newest is None else max(newest, read.time)
            key = (read.epc_hex, antenna.read_point)
            current = self._open.get(key)
            if current is not None and read.time >= current.first_seen + self.window:
                closed.append(current.close())
                del self._open[key]
                current = None
            if current is None:
                current = _Open(
                    read.epc_hex,
                    antenna.read_point,
                    read.time,
                    read.time,
                    antenna.side,
                    antenna.side,
                )
                self._open[key] = current
            self._join(current, read, antenna)
        if newest is not None:
            closed.extend(self._close(lambda o: newest >= o.first_seen + self.window))
        return self._handed_out(closed)

    def flush(self, now: datetime) -> list[Observation]:
        """Close every window that has run its `window_s` by `now`."""
        return self._handed_out(self._close(lambda o: now >= o.first_seen + self.window))

    def close_all(self) -> list[Observation]:
        """Close every open window now (the reader is stopping)."""
        return self._handed_out(self._close(lambda o: True))

    def open_before(self, time: datetime) -> bool:
        """Whether a window that opened before `time` is still open."""
        return any(o.first_seen < time for o in self._open.values())

    def _join(self, current: _Open, read: TagRead, antenna: RfidAntenna) -> None:
        current.count += 1
        if read.time < current.first_seen:
            current.first_seen, current.first_side = read.time, antenna.side
        if read.time >= current.last_seen:
            current.last_seen, current.last_side = read.time, antenna.side
        if read.antenna not in current.antennas:
            current.antennas.append(read.antenna)
        if read.rssi_dbm is not None and (
            current.best_rssi_dbm is None or read.rssi_dbm > current.best_rssi_dbm
        ):
            current.best_rssi_dbm = read.rssi_dbm

    def _close(self, due: Callable[[_Open], bool]) -> list[Observation]:
        keys = [k for k, o in self._open.items() if due(o)]
        return [self._open.pop(k).close() for k in keys]

    def _handed_out(self, closed: list[Observation]) -> list[Observation]:
        closed.sort(key=lambda o: (o.first_seen, o.read_point, o.epc_hex))
        self.counters.observations += len(closed)
        return closed
