"""What the edge agent needs of a device driver, and the two ways a driver may fail.

A driver translates every library exception once, at its boundary, into one of these:
`DeviceUnavailable` (connection refused, timeout, device busy: retry later, reconnect) or
`DeviceMisconfigured` (the profile does not match the device: retrying will not help).
A bad value for one tag is neither: it is a `Sample` with quality "bad" and a detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

Quality = Literal["good", "uncertain", "bad"]


@dataclass(frozen=True, slots=True)
class Sample:
    tag: str
    value: float | None
    unit: str | None
    quality: Quality = "good"
    device_time: datetime | None = None
    detail: str | None = None


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
