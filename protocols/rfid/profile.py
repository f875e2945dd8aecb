"""The serial UHF RFID reader profile model: the port, the framing, the antennas and the
gate's window."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from pydantic import Field, model_validator

from protocols.profile import Name, ProfileBase, SerialPort, Strict


class RfidAntenna(Strict):
    port: int = Field(ge=1, le=64, description="the reader's antenna port number")
    read_point: Name = Field(description="where this antenna looks, e.g. dock-3")
    # At a gate, antennas on both sides of the door tell the direction: a tag seen outside
    # first and inside last moved in.
    side: Literal["outside", "inside"] | None = None
    # At a production line: a tag this antenna reads is an input unit the active batch
    # consumes (the infeed) or an output unit it produced (the outfeed). Not used at a door.
    line_feed: Literal["input", "output"] = Field(
        default="input",
        description="at a production line: input (infeed, consumed by the active batch) or "
        "output (outfeed, produced by it)",
    )


@runtime_checkable
class RfidReader(Protocol):
    """What a gate and the reader stations (edge_agent/gates.py) ask of an RFID reader's
    profile, whatever its transport: its antennas and its gate's window."""

    @property
    def name(self) -> str: ...

    @property
    def antennas(self) -> Sequence[RfidAntenna]: ...

    @property
    def window_s(self) -> float: ...

    @property
    def min_rssi_dbm(self) -> float | None: ...


class RfidReaderProfile(ProfileBase):
    protocol: Literal["rfid_serial"]
    connection: SerialPort
    # mercury: the binary framed protocol of ThingMagic Mercury readers and modules;
    # ascii: one tag report per text line, as many gates and cheap readers offer.
    framing: Literal["mercury", "ascii"]
    antennas: list[RfidAntenna] = Field(min_length=1)
    # Reads of one tag at one read point within this window are one observation.
    window_s: float = Field(default=2.0, gt=0, le=3600)
    min_rssi_dbm: float | None = Field(default=None, ge=-120, le=0)

    @model_validator(mode="after")
    def _unique_ports(self) -> RfidReaderProfile:
        ports = [a.port for a in self.antennas]
        for port in ports:
            if ports.count(port) > 1:
                raise ValueError(f"antenna port {port} appears twice: list each port once")
        return self
