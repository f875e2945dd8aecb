"""The records the edge makes are the message contract's models, built where they are
captured (binding, stations, scans, gates, the agent's tag specs, the outbox's own
`readings_dropped`).

Building one is checking it: a record the collector would refuse (a NUL character, a name
over 128 characters, a NaN, a time outside 2000-2099) raises while it is built, before it
reaches the outbox. `contract_checked` turns the contract's ValidationError into
RecordRefused, naming each field and what is wrong, which every source catches so that no
device loop stops on a refused value.

The contract requires a `seq`, which only the outbox gives (at append): records are built
with UNNUMBERED and numbered in the JSON they serialise to (`Outbox.append_many`).

Readings, the edge's bulk (a hundred tags a second per device is ordinary), are checked
in two parts so that a reading costs no more than its JSON text: a `ReadingForm` holds
what one tag's readings share (line, batch, device, tag, unit), checked once by the Reading
model itself when the form is made, and `ReadingForm.reading` checks only what changes
per reading (time, device time, value, quality, detail). What the form cannot vouch for
at a glance (an int or a string as the value, a detail, a time the contract refuses) is
built as a full Reading model, so a refusal is the model's own, naming the field. Either way the
result is a `CheckedReading`: the exact JSON text the Reading model serialises to
(tests/edge_agent/test_records.py proves the equality, and the equal refusals, over
generated readings).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import get_args

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_json

from protocols.mqtt.contract import (
    EARLIEST,
    AwareDatetime,
    BatchEvent,
    DeviceEvent,
    ObjectEventRecord,
    Quality,
    Reading,
    ReadingsDropped,
    TagSpecs,
    TransformationEventRecord,
)

# Every record kind the edge appends to its outbox.
EdgeRecord = (
    Reading
    | BatchEvent
    | DeviceEvent
    | ReadingsDropped
    | ObjectEventRecord
    | TransformationEventRecord
    | TagSpecs
)
RECORD_MODELS: tuple[type[EdgeRecord], ...] = (
    Reading,
    BatchEvent,
    DeviceEvent,
    ReadingsDropped,
    ObjectEventRecord,
    TransformationEventRecord,
    TagSpecs,
)
# The `seq` a record is built with; the outbox replaces it with the stream's next number.
UNNUMBERED = 0


class RecordRefused(ValueError):
    """A record (or a part of one: an item, a name) the message contract refuses: it never
    enters the outbox."""

    def __init__(self, kind: object, problems: list[str]) -> None:
        self.kind = kind
        self.problems = problems
        super().__init__(
            f"{kind} record refused by the message contract (trace.v1), the collector would "
            "never accept it: " + "; ".join(problems)
        )

    @classmethod
    def of(cls, kind: str, err: ValidationError) -> RecordRefused:
        return cls(
            kind,
            [
                f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
                + (f" (got {_shown(e['input'])})" if e["loc"] else "")
                for e in err.errors(include_url=False)
            ],
        )


@contextmanager
def contract_checked(kind: str) -> Iterator[None]:
    """Build contract models in this block: what the contract refuses raises RecordRefused
    for `kind` (a record kind, or "item")."""
    try:
        yield
    except ValidationError as err:
        raise RecordRefused.of(kind, err) from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- readings -------------------------------------------------------------------------------


class CheckedReading:
    """A reading the contract accepts, held as the JSON text its Reading model serialises
    to, less the head (`{"kind":"reading","seq":N,`) that the outbox writes when it numbers
    it. Made only by ReadingForm.reading, which checked it."""

    __slots__ = ("tail",)

    def __init__(self, tail: str) -> None:
        self.tail = tail

    def body(self, seq: int) -> str:
        """The JSON of the reading numbered `seq`: `Reading.model_dump_json()` exactly."""
        return f"{READING_HEAD}{seq},{self.tail}"

    def model(self, seq: int = UNNUMBERED) -> Reading:
        """The contract model this text is (for a look at it; the hot path never needs it)."""
        return Reading.model_validate_json(self.body(seq))

    def __repr__(self) -> str:
        return f"CheckedReading({self.tail[:120]!r})"


READING_HEAD = '{"kind":"reading","seq":'
_UNNUMBERED_READING = f"{READING_HEAD}{UNNUMBERED},"

_TIME: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)
_QUALITY_JSON: dict[object, str] = {q: f'"{q}"' for q in get_args(Quality)}


def _time_json(at: datetime) -> str | None:
    """The JSON of a time the contract accepts, or None."""
    try:
        return _TIME.dump_json(_TIME.validate_python(at)).decode()
    except ValidationError:
        return None


class TakenAt:
    """When a poll was taken, checked once for all its readings (`json` None: the contract
    refuses it, and each reading then gets the model's own refusal)."""

    __slots__ = ("at", "json")

    def __init__(self, at: datetime) -> None:
        self.at = at
        self.json = _time_json(at)


class ReadingForm:
    """What the readings of one tag share (line, batch, device, tag, unit), checked once by
    the Reading model: RecordRefused when it is made if the contract refuses any of it."""

    __slots__ = ("_middle", "_unit", "batch", "device", "line", "tag", "unit")

    def __init__(
        self, line: str, batch: str | None, device: str, tag: str, unit: str | None
    ) -> None:
        with contract_checked("reading"):
            Reading(
                seq=UNNUMBERED,
                time=EARLIEST,
                line=line,
                batch=batch,
                device=device,
                tag=tag,
                value=0.0,
                unit=unit,
            )
        self.line, self.batch, self.device, self.tag, self.unit = line, batch, device, tag, unit
        # Each part as the Reading model serialises it (to_json is pydantic's serialiser).
        self._middle = (
            f',"line":{_json(line)},"batch":{_json(batch)},"device":{_json(device)}'
            f',"tag":{_json(tag)},"value":'
        )
        self._unit = f',"unit":{_json(unit)},"quality":'

    def reading(
        self,
        taken: TakenAt,
        value: object,
        quality: object = "good",
        device_time: datetime | None = None,
        detail: str | None = None,
    ) -> CheckedReading:
        """One reading of this tag. RecordRefused, naming the field, for what the contract
        refuses (a value of the wrong type, an unknown quality, a naive time...)."""
        checked = self.at_a_glance(taken, value, quality, device_time, detail)
        if checked is not None:
            return checked
        with contract_checked("reading"):
            model = Reading(
                seq=UNNUMBERED,
                time=taken.at,
                device_time=device_time,
                line=self.line,
                batch=self.batch,
                device=self.device,
                tag=self.tag,
                value=value,  # type: ignore[arg-type]
                unit=self.unit,
                quality=quality,  # type: ignore[arg-type]
                detail=detail,
            )
        body = model.model_dump_json()
        if not body.startswith(_UNNUMBERED_READING):
            raise AssertionError(f"the contract's Reading no longer starts kind, seq: {body}")
        return CheckedReading(body[len(_UNNUMBERED_READING) :])

    def at_a_glance(
        self,
        taken: TakenAt,
        value: object,
        quality: object = "good",
        device_time: datetime | None = None,
        detail: str | None = None,
    ) -> CheckedReading | None:
        """The reading if it has the shape nearly every reading has (a finite float, or no
        value with a quality that is not good; a known quality; a device time the contract
        takes, or none; no detail), else None: `reading` then builds it as the model,
        which accepts or refuses it in its own words."""
        if taken.json is None or detail is not None:
            return None
        if type(value) is float:
            if not math.isfinite(value):
                return None
            v = to_json(value).decode()
        elif value is None and quality != "good":
            v = "null"
        else:
            return None
        q = _QUALITY_JSON.get(quality) if type(quality) is str else None
        dt = "null" if device_time is None else _time_json(device_time)
        if q is None or dt is None:
            return None
        return CheckedReading(
            f'"time":{taken.json},"device_time":{dt}{self._middle}{v}{self._unit}{q}'
            ',"detail":null}'
        )


def _json(value: str | None) -> str:
    return to_json(value).decode()
