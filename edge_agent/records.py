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
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError

from protocols.mqtt.contract import (
    BatchEvent,
    DeviceEvent,
    ObjectEventRecord,
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
