"""What every device profile shares, whatever its protocol, and the optional traits the edge
asks of a profile by type rather than by attribute name.

Each protocol's folder holds its own profile model (`protocols/<name>/profile.py`) built on
`ProfileBase`; `device_profiles/schema.py` assembles them from the registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, Self, runtime_checkable

from pydantic import Field, model_validator

from protocols.strict import Strict

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]


class SpecLimits(Strict):
    """Engineering-unit limits; a reading outside them is an excursion."""

    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> SpecLimits:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high}): swap them")
        return self


class BatchSource(Strict):
    """A tag whose value is the line's active batch: a change starts a new batch (ending the
    one before); an empty string or 0 means the line is idle. Its values are batch events,
    not readings."""

    tag: Name
    prefix: str = Field(default="", max_length=32, description="put before numeric batch ids")
    numbered: bool = Field(
        default=False,
        description="the tag only says that a batch runs (a run bit, a counter the PLC resets):"
        " a change to a value that is not 0 or empty starts a batch whose id the line's"
        " numbering rule makes",
    )


class SerialPort(Strict):
    """A serial line: RS-232/RS-485 port, or a USB virtual COM port."""

    port: str = Field(min_length=1, description="e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: int = Field(default=115200, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class SpecTag(Protocol):
    """A tag that can carry spec limits (Modbus registers, OPC UA nodes)."""

    @property
    def name(self) -> str: ...

    @property
    def unit(self) -> str | None: ...

    @property
    def spec(self) -> SpecLimits | None: ...


@runtime_checkable
class Tagged(Protocol):
    """A profile that reads named tags: their names are unique, a batch source names one,
    and their spec limits are announced to the collector."""

    @property
    def tags(self) -> Sequence[SpecTag]: ...


@runtime_checkable
class Polled(Protocol):
    """A profile read on a schedule."""

    @property
    def poll_interval_s(self) -> float: ...


@runtime_checkable
class Subscribable(Protocol):
    """A profile whose device may report changes itself instead of being polled."""

    @property
    def sampling(self) -> Literal["subscription", "poll"]: ...


@runtime_checkable
class ReadingRate(Protocol):
    """A profile that says how many readings per second its device makes at most, for
    the edge to size its outbox by; without it a Tagged and Polled profile makes one
    reading per tag per poll (`readings_per_s`)."""

    def readings_per_s(self) -> float: ...


def readings_per_s(profile: object) -> float:
    """Readings per second a device's profile asks for at most (every tag at its full
    rate); 0 for devices that report events (scans, tag reads), a few a minute."""
    if isinstance(profile, ReadingRate):
        return profile.readings_per_s()
    if isinstance(profile, Tagged) and isinstance(profile, Polled):
        return len(profile.tags) / profile.poll_interval_s
    return 0.0


class ProfileBase(Strict):
    """The keys of every profile; a protocol's model adds `protocol: Literal["<name>"]`,
    its `connection` and its own settings."""

    profile_version: Literal[1]
    name: Name
    description: str | None = None
    vendor: str | None = None
    model: str | None = None
    batch_source: BatchSource | None = None
    if TYPE_CHECKING:
        # Every protocol's model declares these (`protocol` as its Literal name); to the
        # type checker they are known on any profile, as they are at run time.
        protocol: str
        connection: Any

    @model_validator(mode="after")
    def _tags_consistent(self) -> ProfileBase:
        names = [t.name for t in self.tags] if isinstance(self, Tagged) else []
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"tag name {name!r} appears twice: tag names must be unique")
        if self.batch_source is not None and self.batch_source.tag not in names:
            raise ValueError(
                f"batch_source.tag {self.batch_source.tag!r} is not one of this profile's tags "
                f"({', '.join(names)})"
            )
        return self


@runtime_checkable
class RefersToFiles(Protocol):
    """A profile naming files (certificates, keys) that may be given relative to the profile
    file itself; loading it from a file resolves them there."""

    def files_beside(self, folder: Path) -> Self: ...
