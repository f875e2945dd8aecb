"""Time zones named from outside (an export's query, a setting, a profile pushed to edges):
one lookup for every package, so that every way a name can fail is caught in one place.

`zoneinfo` looks a name up as a path under TZPATH: besides an unknown name
(ZoneInfoNotFoundError) and a malformed one (ValueError: absolute, `..`, NUL), a name
longer than a file name may be raises OSError ("File name too long"), which escaped to a
500 before schemathesis found it.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone_named(name: str) -> ZoneInfo | None:
    """The IANA zone `name` names, or None when it names none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
