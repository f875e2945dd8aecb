"""How a line numbers its batches when a batch starts without an id (no MES, no label).

A rule is part of a line's site configuration; the edge applies it (edge_agent/batch_numbers.py
keeps the sequence) and the collector's registry validates it with the same words:

    numbering:
      pattern: "{line}-{date:%y%m%d}-{shift}{seq}"   # -> line-1-261202-A003
      time_zone: Europe/Berlin
      shifts: [{name: A, start: "06:00"}, {name: B, start: "14:00"}, {name: C, start: "22:00"}]
      sequence: {width: 3, start: 1, reset: shift}

The date is the production day: the day the current shift started, in the plant's time zone
(at 01:30 the night shift that began at 22:00 still counts for the day before). A rule whose
ids could come round again is refused: a sequence that resets must have the period it resets
on in the pattern (a daily reset needs the day, a shift reset the day and the shift), and the
ids of two lines must differ by `{line}` or by their equipment. This module is pure (no clock,
no storage): the caller gives the time and the sequence number.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from protocols.profile import Name
from protocols.strict import Strict
from protocols.time_zones import zone_named

Reset = Literal["never", "daily", "shift", "monthly", "yearly"]
FIELDS = ("date", "shift", "line", "equipment", "seq")
# strftime directives of a day (a date's), their meaning for the repeat check.
DATE_DIRECTIVES = {
    "Y": "year",
    "y": "year",  # two digits: repeats after a century, which the edge's id check catches
    "m": "month",
    "d": "day",
    "j": "day of year",
    "G": "ISO year",
    "V": "ISO week",
    "u": "ISO weekday",
}
# What each reset needs in the pattern so that no id repeats after it (any one set will do).
COVERS: dict[Reset, list[set[str]]] = {
    "never": [set()],
    "yearly": [{"year"}],
    "monthly": [{"year", "month"}],
    "daily": [
        {"year", "month", "day"},
        {"year", "day of year"},
        {"ISO year", "ISO week", "ISO weekday"},
    ],
    "shift": [
        {"year", "month", "day"},
        {"year", "day of year"},
        {"ISO year", "ISO week", "ISO weekday"},
    ],
}
LITERAL = re.compile(r"^[A-Za-z0-9._:/\-]*$")
MAX_ID_CHARS = 128  # the contract's Name: a batch id
SEQ_DIGITS_AT_MOST = 12  # for the length check: a sequence grows past its width, not past this
# Begins with a letter, so that it is told apart from the digits of a {seq} before it.
ShiftName = Annotated[str, Field(min_length=1, max_length=8, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]


class Shift(Strict):
    name: ShiftName
    start: str  # "HH:MM", local time in the rule's time zone

    @field_validator("start", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        if isinstance(value, int):  # YAML 1.1 reads an unquoted 14:00 as 840 (base 60)
            raise ValueError(
                f'got the number {value}: write the start time in quotes, e.g. start: "14:00"'
            )
        return value

    @field_validator("start")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", value):
            raise ValueError(f'{value!r} is not a time of day: write it as HH:MM, e.g. "06:00"')
        return value

    @property
    def starts(self) -> time_of_day:
        return time_of_day.fromisoformat(self.start)


class Sequence(Strict):
    width: int = Field(default=3, ge=1, le=9)  # digits at least (zero-padded); more if it grows
    start: int = Field(default=1, ge=0, le=10**9)  # the first number after a reset
    reset: Reset = "daily"


@dataclass(frozen=True)
class Piece:
    literal: str
    field: str | None  # one of FIELDS, or None at the end
    spec: str  # the date's strftime format


def parse_pattern(pattern: str) -> list[Piece]:
    """The pattern's pieces; ValueError names what is wrong and the fix."""
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as err:
        raise ValueError(
            f"{err}: write fields as {{date:%y%m%d}}, {{seq}}, ... and no lone braces"
        ) from err
    pieces = []
    for literal, field, spec, conversion in parsed:
        if not LITERAL.match(literal):
            raise ValueError(f"{literal!r}: a batch id may hold letters, digits and . _ : / - only")
        if field is not None and field not in FIELDS:
            raise ValueError(
                f"unknown field {{{field}}}: use {', '.join('{' + f + '}' for f in FIELDS)}"
            )
        if conversion is not None:
            raise ValueError(f"{{{field}!{conversion}}}: fields take no conversion")
        spec = spec or ""
        if field == "date":
            spec = spec or "%Y%m%d"
            _check_date_spec(spec)
        elif spec:
            raise ValueError(
                f"{{{field}:{spec}}}: only {{date}} takes a format"
                + ("; the sequence's digits are `sequence.width`" if field == "seq" else "")
            )
        pieces.append(Piece(literal, field, spec))
    return pieces


def _check_date_spec(spec: str) -> None:
    i = 0
    while i < len(spec):
        if spec[i] == "%":
            directive = spec[i + 1 : i + 2]
            if directive not in DATE_DIRECTIVES:
                raise ValueError(
                    f"{{date:{spec}}}: %{directive} is not a day's part; use "
                    + " ".join(f"%{d}" for d in DATE_DIRECTIVES)
                )
            i += 2
            continue
        if not LITERAL.match(spec[i]):
            raise ValueError(f"{{date:{spec}}}: {spec[i]!r} cannot be in a batch id")
        i += 1


def _date_parts(pieces: list[Piece]) -> set[str]:
    parts: set[str] = set()
    for piece in pieces:
        if piece.field == "date":
            parts |= {DATE_DIRECTIVES[d] for d in re.findall(r"%(.)", piece.spec)}
    return parts


class BatchNumbering(Strict):
    """A line's rule for the ids of batches started without one."""

    pattern: str = Field(min_length=1, max_length=100)
    time_zone: str = "UTC"  # the plant's, an IANA name such as Europe/Berlin
    shifts: list[Shift] = Field(default_factory=list, max_length=12)
    equipment: Name | None = None  # the kettle or machine, for {equipment}
    sequence: Sequence = Field(default_factory=Sequence)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        pieces = parse_pattern(value)
        fields = [p.field for p in pieces if p.field]
        if "seq" not in fields:
            raise ValueError("a pattern needs {seq}: without it every batch gets the same id")
        for field in set(fields):
            if fields.count(field) > 1 and field != "date":
                raise ValueError(f"{{{field}}} appears {fields.count(field)} times: keep one")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if zone_named(value) is None:
            raise ValueError(
                f"{value!r} is not a time zone this edge knows: use an IANA name such as "
                "Europe/Berlin or America/Chicago"
            )
        return value

    @model_validator(mode="after")
    def _never_repeats(self) -> BatchNumbering:
        pieces = parse_pattern(self.pattern)
        fields = {p.field for p in pieces}
        names = [s.name for s in self.shifts]
        starts = [s.start for s in self.shifts]
        for value, what in ((names, "name"), (starts, "start")):
            twice = sorted({v for v in value if value.count(v) > 1})
            if twice:
                raise ValueError(
                    f"shifts: {what} {', '.join(twice)} is given twice: each shift needs its own"
                )
        for a in names:
            for b in names:
                if a != b and b.startswith(a):
                    # "A" + seq 1001 and "A1" + seq 001 would be one id.
                    raise ValueError(
                        f"shifts: name {b} begins with the name {a}: rename one so that no "
                        "name begins another"
                    )
        reset = self.sequence.reset
        if ("shift" in fields or reset == "shift") and not self.shifts:
            raise ValueError(
                "shifts: the pattern's {shift} or a shift reset needs the shifts, e.g. "
                'shifts: [{name: A, start: "06:00"}, {name: B, start: "18:00"}]'
            )
        if "equipment" in fields and self.equipment is None:
            raise ValueError("equipment: the pattern has {equipment}: name the kettle or machine")
        if "line" not in fields and "equipment" not in fields:
            raise ValueError(
                "pattern: put {line} (or {equipment}) in it: batch ids are unique across the "
                "plant, and another line would make the same ones"
            )
        parts = _date_parts(pieces)
        if not any(need <= parts for need in COVERS[reset]):
            need = " or ".join("+".join(sorted(n)) for n in COVERS[reset])
            raise ValueError(
                f"sequence.reset: a {reset} reset starts the sequence again, so the ids would "
                f"repeat unless the pattern's {{date}} holds the {need} (e.g. {{date:%y%m%d}}), "
                "or use reset: never"
            )
        if reset == "shift" and "shift" not in fields:
            raise ValueError(
                "sequence.reset: a shift reset starts the sequence again every shift, so the ids "
                "would repeat: put {shift} in the pattern, or reset daily"
            )
        return self

    # ---- applying the rule (pure: the clock and the sequence are the caller's) ----------

    def shift_at(self, at: datetime) -> tuple[date, str | None]:
        """The production day and the shift at `at`: the shift that started last, and the
        day it started on in the plant's time zone (no shifts: the calendar day)."""
        zone = ZoneInfo(self.time_zone)
        now = at.astimezone(UTC)
        local_day = now.astimezone(zone).date()
        if not self.shifts:
            return local_day, None
        best: tuple[datetime, date, str] | None = None
        for day in (local_day - timedelta(days=1), local_day):
            for shift in self.shifts:
                begins = datetime.combine(day, shift.starts, tzinfo=zone).astimezone(UTC)
                if begins <= now and (best is None or begins > best[0]):
                    best = (begins, day, shift.name)
        assert best is not None  # every shift starts on the day before at the latest
        return best[1], best[2]

    def period(self, at: datetime) -> str:
        """The sequence's current period: when it changes, the sequence starts again."""
        day, shift = self.shift_at(at)
        reset = self.sequence.reset
        if reset == "never":
            return "never"
        if reset == "yearly":
            return f"{day.year}"
        if reset == "monthly":
            return f"{day:%Y-%m}"
        if reset == "daily":
            return day.isoformat()
        return f"{day.isoformat()}/{shift}"

    def render(self, line_id: str, at: datetime, seq: int) -> str:
        day, shift = self.shift_at(at)
        values = {
            "shift": shift or "",
            "line": line_id,
            "equipment": self.equipment or "",
            "seq": f"{seq:0{self.sequence.width}d}",
        }
        out = []
        for piece in parse_pattern(self.pattern):
            out.append(piece.literal)
            if piece.field == "date":
                out.append(day.strftime(piece.spec))
            elif piece.field is not None:
                out.append(values[piece.field])
        return "".join(out)


def numbering_problems(lines: list[tuple[str, BatchNumbering | None]]) -> list[str]:
    """What a site's rules do wrong together, as `lines[i].numbering: what and the fix`:
    an id too long for the contract, two lines that would make the same ids."""
    problems = []
    by_equipment: dict[str, str] = {}
    for i, (line_id, rule) in enumerate(lines):
        if rule is None:
            continue
        where = f"lines[{i}].numbering"
        longest = rule.render(
            line_id, datetime(2000, 12, 31, 23, tzinfo=UTC), 10**SEQ_DIGITS_AT_MOST - 1
        )
        longest_shift = max((len(s.name) for s in rule.shifts), default=0)
        length = len(longest) + longest_shift
        if length > MAX_ID_CHARS:
            problems.append(
                f"{where}.pattern: its ids can be {length} characters long, over the "
                f"{MAX_ID_CHARS} of a batch id: shorten it"
            )
        if "line" not in {p.field for p in parse_pattern(rule.pattern)} and rule.equipment:
            other = by_equipment.get(rule.equipment)
            if other is not None:
                problems.append(
                    f"{where}.equipment: {rule.equipment!r} also numbers the batches of line "
                    f"{other}, so both would make the same ids: put {{line}} in the pattern"
                )
            by_equipment[rule.equipment] = line_id
    return problems


def run_tag_problems(
    rules: dict[str, BatchNumbering | None], run_tags: list[tuple[str, str, str]]
) -> list[str]:
    """A PLC run tag (`batch_source.numbered`) on a line without a rule would start batches
    nobody can number: `run_tags` are (where, device, station) of such tags."""
    return [
        f"{where}: device {device}'s batch_source is numbered, but line {station} has no "
        "numbering rule: add `numbering` to the line"
        for where, device, station in run_tags
        if rules.get(station) is None
    ]
