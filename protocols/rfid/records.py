"""What the codecs and the driver hand on: a tag record off the wire, a timed tag read, and
the counters every stream decoder keeps of what it had to throw away."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TagRecord:
    """One tag report as the reader sent it: no time yet (the codec has no clock)."""

    epc: bytes
    antenna: int  # the reader's antenna port, as numbered on its housing (1-based)
    rssi_dbm: int | None = None  # None when the framing does not carry it
    pc: int | None = None  # the Gen2 protocol-control word, when the reader reports it

    @property
    def epc_hex(self) -> str:
        return self.epc.hex().upper()


@dataclass(frozen=True, slots=True)
class TagRead:
    """A tag report stamped with the edge's receive time (timezone-aware UTC): what
    `RfidReaderDriver.stream` delivers and what `Gate` collapses."""

    epc_hex: str
    antenna: int
    rssi_dbm: float | None
    pc: int | None
    time: datetime


@dataclass(slots=True)
class DecoderCounters:
    """What a stream decoder saw. A rising `bad_frames` or `bytes_discarded` with few good
    frames is a line problem (baud rate, wiring, interference), not a tag problem."""

    frames: int = 0  # frames (or lines) that passed every check
    records: int = 0  # tag records taken from them
    # Frames that failed the CRC, were cut short, or lines that do not parse. One damaged
    # stretch counts once, although its bytes may look like several frame starts.
    bad_frames: int = 0
    bytes_discarded: int = 0  # bytes that belonged to no good frame
    # Frames that passed the CRC but whose contents this codec cannot use: an error status
    # from the reader, or a tag-record layout it does not implement.
    unusable_frames: int = 0


class TagDecoder(Protocol):
    """A stream decoder for one framing: bytes in arbitrary chunks, tag records out."""

    counters: DecoderCounters

    def feed(self, chunk: bytes) -> list[TagRecord]: ...

    def idle(self) -> list[TagRecord]:
        """The line has gone quiet: a frame still incomplete now was cut short; drop it."""
        ...
