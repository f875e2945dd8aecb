"""Where a protocol plugs in: one entry per `protocol:` value, naming its profile model and
its driver. `device_profiles/schema.py` builds the profile format from the entries and the
edge builds each device's driver from them; neither names a protocol.

A protocol's folder declares its entries in `plugin.py`; `protocols/installed.py` lists the
folders, one line each. Optional capabilities are typed protocols, checked with isinstance:
of the profile (`protocols.profile`: Polled, Subscribable, Tagged, ReadingRate) and of the
driver (`protocols.driver`: SubscribingDriver, StreamingDriver, Diagnosable, CountsBadInput).
What a site asks of its devices is the entry's: whether they report events (`events`: a
warehouse station takes only those) and the check of its devices together (`site_check`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

from protocols.driver import Driver
from protocols.profile import ProfileBase

P = TypeVar("P", bound=ProfileBase)


@dataclass(frozen=True, slots=True)
class ProtocolEntry(Generic[P]):
    name: str  # the profile's `protocol:` value
    profile: type[P]  # its model; `protocol: Literal[name]` is its discriminator
    driver: Callable[[P], Driver]  # builds the driver of one device from its profile
    # What a streaming driver delivers (protocols.rfid.TagRead, protocols.scanner.Scan), for
    # the edge to route to a station; None: Samples, bound as readings.
    events: type | None = None
    # The problems of a site's devices of this protocol taken together, by device name, as
    # `device: what and the fix` lines (devices on one RS-485 port share its settings and
    # need their own unit ids): checked with the whole site, before any device opens.
    site_check: Callable[[Mapping[str, P]], list[str]] | None = None


class RegistryError(ValueError):
    """Two protocols claim one name, or an entry's profile does not declare its name."""


class UnknownProtocol(KeyError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.message = f"no protocol {name!r} is installed: use one of {', '.join(known)}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the whole sentence
        return self.message


def _declared_name(profile: type[ProfileBase]) -> str | None:
    field = profile.model_fields.get("protocol")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    values = get_args(field.annotation)
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


class Registry:
    """The installed protocols, in registration order (the order of the published schema)."""

    def __init__(self, entries: Iterable[ProtocolEntry[Any]] = ()) -> None:
        self._entries: dict[str, ProtocolEntry[Any]] = {}
        for entry in entries:
            declared = _declared_name(entry.profile)
            if declared != entry.name:
                raise RegistryError(
                    f"protocol {entry.name!r}: its profile {entry.profile.__name__} must "
                    f'declare protocol: Literal["{entry.name}"] (it declares {declared!r})'
                )
            if entry.name in self._entries:
                raise RegistryError(f"protocol {entry.name!r} is registered twice")
            self._entries[entry.name] = entry

    def __iter__(self) -> Iterator[ProtocolEntry[Any]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entry(self, name: str) -> ProtocolEntry[Any]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownProtocol(name, self._entries) from None

    def with_entries(self, *entries: ProtocolEntry[Any]) -> Registry:
        """These protocols and the given ones (a site's own, or a test's)."""
        return Registry([*self._entries.values(), *entries])

    def entry_of(self, profile: ProfileBase) -> ProtocolEntry[Any]:
        """The entry whose model this profile is."""
        for entry in self._entries.values():
            if type(profile) is entry.profile:
                return entry
        name = f"{type(profile).__name__} (of device {profile.name})"
        raise UnknownProtocol(name, self._entries)

    def event_protocols(self) -> tuple[str, ...]:
        """The protocols whose devices report events (scans, tag reads), not readings."""
        return tuple(entry.name for entry in self._entries.values() if entry.events is not None)

    def site_problems(self, devices: Mapping[str, ProfileBase]) -> list[str]:
        """What each protocol's site check finds among a site's devices (by name)."""
        problems: list[str] = []
        for entry in self._entries.values():
            if entry.site_check is not None:
                mine = {n: p for n, p in devices.items() if type(p) is entry.profile}
                problems += entry.site_check(mine)
        return problems

    def driver_for(self, profile: ProfileBase) -> Driver:
        """The driver of one device."""
        return self.entry_of(profile).driver(profile)
