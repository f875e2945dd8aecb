"""Statement parameters as PostgreSQL's binary arrays (array_send's format), packed in one
pass.

The group commit sends its rollups as one array per column (rollups.STATS_PARTS_UPSERT,
MINUTES_PARTS_UPSERT): thousands of elements a group. psycopg dumps a list element by
element, finding and calling each element's dumper (a py-spy profile of the collector at
100 records a message: about a tenth of its CPU in that dump); here an element is one
struct pack. tests/cloud_collector/test_binary_arrays.py reads them back from PostgreSQL.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from psycopg import adapters
from psycopg.adapt import Dumper
from psycopg.pq import Format

from cloud_collector.reading_rows import text_field, time_field

_NULL = struct.pack(">i", -1)
_HEADER = struct.Struct(">iiiii").pack  # dimensions, has nulls, element type, length, lower bound
_EMPTY = struct.Struct(">iii").pack  # no dimensions, no nulls, element type
_INT8 = struct.Struct(">iq").pack
_FLOAT8 = struct.Struct(">id").pack


@dataclass(frozen=True, slots=True)
class Element:
    """An element type: its oid, its array type's oid, and how one value is written."""

    oid: int
    array_oid: int
    field: Callable[[Any], bytes]


TEXT = Element(25, 1009, text_field)
INT8 = Element(20, 1016, lambda v: _INT8(8, v))
FLOAT8 = Element(701, 1022, lambda v: _FLOAT8(8, v))
TIMESTAMPTZ = Element(1184, 1185, time_field)


class PackedArray:
    """Values of one element type as a one-dimensional binary array (None is NULL)."""

    __slots__ = ("data",)
    element: ClassVar[Element]

    def __init__(self, values: Sequence[Any]) -> None:
        element = self.element
        if not values:
            self.data = _EMPTY(0, 0, element.oid)
            return
        field = element.field
        nulls = 0
        parts = []
        for value in values:
            if value is None:
                parts.append(_NULL)
                nulls = 1
            else:
                parts.append(field(value))
        self.data = _HEADER(1, nulls, element.oid, len(values), 1) + b"".join(parts)


class Texts(PackedArray):
    element = TEXT


class Int8s(PackedArray):
    element = INT8


class Float8s(PackedArray):
    element = FLOAT8


class Timestamptzs(PackedArray):
    element = TIMESTAMPTZ


def packed(columns: Sequence[Sequence[Any]], kinds: Sequence[type[PackedArray]]) -> list[Any]:
    """Statement parameters kept as one list per column, each packed as its kind."""
    return [kind(column) for column, kind in zip(columns, kinds, strict=True)]


def _register(kind: type[PackedArray]) -> None:
    class _Packed(Dumper):
        format = Format.BINARY
        oid = kind.element.array_oid

        def dump(self, obj: Any) -> bytes:
            return obj.data  # type: ignore[no-any-return]

    adapters.register_dumper(kind, _Packed)


for _kind in (Texts, Int8s, Float8s, Timestamptzs):
    _register(_kind)
