"""Text for a terminal: aligned tables, ages, quantities. What the API returns came from
plants, partners and ERP files; a control character in it (an ANSI escape in a lot code)
is shown escaped, never sent to the terminal as it is."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from tracectl.collector_api import ApiSettings, CommandError

MAX_CELL = 48


def safe(value: Any) -> str:
    """`value` as text with every control character escaped (\\x1b, \\n ...)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if all(unicodedata.category(c)[0] != "C" or c == " " for c in text):
        return text
    return "".join(
        c if unicodedata.category(c)[0] != "C" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def cell(value: Any, width: int = MAX_CELL) -> str:
    text = safe(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> str:
    """Columns as wide as their widest cell (at most MAX_CELL characters); numbers right."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return "\n".join([line(list(headers)), *(line(row) for row in cells)])


def quantity(value: float | None, uom: str | None) -> str:
    if value is None:
        return "-"
    number = f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{number} {safe(uom)}" if uom else number


@functools.cache
def plant_zone() -> ZoneInfo:
    """The plant's time zone: TRACE_PLANT_TIMEZONE, the setting the pages show times in
    (UTC unset), never this computer's own zone: a terminal elsewhere reads the plant's
    clock as the pages do."""
    try:
        return ZoneInfo(ApiSettings().plant_timezone)
    except ValidationError as err:
        raise CommandError(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in err.errors())
        ) from None


def zone_note() -> str:
    """The line under a table of times: which zone they are in, and where it is set."""
    return f"times in {plant_zone().key} (TRACE_PLANT_TIMEZONE)"


def when(value: str | None, zone: ZoneInfo | None = None) -> str:
    """An ISO time from the API as the plant reads it: in the plant's time zone (or `zone`),
    to the second, the zone named as its clocks show it (UTC, CST, CEST)."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return safe(value)
    local = moment.astimezone(zone or plant_zone())
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def ago(value: str | float | None, now: datetime | None = None) -> str:
    """How long ago: from seconds, or from an ISO time against this computer's clock."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return safe(value)
        seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    else:
        seconds = float(value)
    if seconds < 0:
        return "just now"
    return f"{duration(seconds)} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
