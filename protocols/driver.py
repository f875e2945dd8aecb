"""What the edge agent needs of a device driver, and the two ways a driver may fail.

A driver translates every library exception once, at its boundary, into one of these:
`DeviceUnavailable` (connection refused, timeout, device busy: retry later, reconnect) or
`DeviceMisconfigured` (the profile does not match the device: retrying will not help).
A bad value for one tag is neither: it is a `Sample` with quality "bad" and a detail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

Quality = Literal["good", "uncertain", "bad"]


@dataclass(frozen=True, slots=True)
class Sample:
    tag: str
    value: float | None  # engineering value (scale and offset applied); None if unusable
    unit: str | None
    quality: Quality = "good"
    device_time: datetime | None = None  # the device's own (source) timestamp, if it has one
    detail: str | None = None  # why the quality is not good, in the device's words
    text: str | None = None  # a string tag's value (batch ids); value is None then


class DeviceUnavailable(Exception):
    """The device cannot be reached now; the caller retries with backoff."""


class DeviceMisconfigured(Exception):
    """The profile asks for something this device refuses; fix the profile."""


class PollingDriver(Protocol):
    """A device the edge reads on a schedule."""

    name: str

    async def open(self) -> None: ...

    async def read(self) -> list[Sample]: ...

    async def close(self) -> None: ...


Deliver = Callable[[list[Sample]], None]


@runtime_checkable
class SubscribingDriver(Protocol):
    """Optional: a device that reports changes itself (OPC UA data-change notifications).

    `subscribe` calls `deliver` with each batch of samples (the initial values first) and
    returns only by raising: `DeviceUnavailable` when the session is lost, after which the
    caller closes, reopens and subscribes again.
    """

    name: str

    async def subscribe(self, deliver: Deliver) -> None: ...


@runtime_checkable
class StreamingDriver(Protocol):
    """A device that reports on its own rather than being read: an RFID reader's tag
    reports, a barcode scanner's scans. The item type is the protocol's own (e.g.
    protocols.rfid.TagRead, protocols.scanner.Scan).

    `stream` calls `deliver` with each batch of items as they arrive and returns only by
    raising: `DeviceUnavailable` when the port is lost (the caller closes, reopens and
    streams again). Garbage on the line is counted and skipped, never raised.
    """

    name: str

    async def open(self) -> None: ...

    async def stream(self, deliver: Callable[[list[Any]], None]) -> None: ...

    async def close(self) -> None: ...


Driver = PollingDriver | StreamingDriver


@runtime_checkable
class Diagnosable(Protocol):
    """Optional: a driver that can describe the state of its line for a technician (the
    port, its framing, bytes and frames seen); shown under "line" in the device status."""

    def diagnostics(self) -> dict[str, Any]: ...


@runtime_checkable
class CountsBadInput(Protocol):
    """Optional: a driver that counts what it dropped from the line since creation (garbled
    replies, garbage lines), by counter name; a steady rise is a wiring or settings fault."""

    def bad_input(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class ProbeReading:
    """One tag as a probe shows it to a technician before the device goes live: where it
    was read, what the device answered as the wire carries it, and what the profile makes
    of it (a wrong address, data type, word order or scale is plain side by side)."""

    sample: Sample  # the decoded value, unit and quality, as capture would record it
    where: str  # e.g. "holding 0..1" or "ns=2;s=Oven.Temp"
    raw: str  # e.g. "0x4291 0x0000" or "Double 72.5 (Good)"
    # What the same answer would read as under other decoding settings of the profile,
    # e.g. ("byte_order big, word_order little", 72.5): where to look when a value is wrong.
    alternatives: tuple[tuple[str, float], ...] = ()


@runtime_checkable
class Probing(Protocol):
    """Optional: a polling driver that can read every tag once and show the raw answer
    beside the decoded value (`tracectl profile probe`). Called after `open`."""

    async def probe(self) -> list[ProbeReading]: ...
