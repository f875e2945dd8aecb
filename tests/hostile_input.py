"""Hypothesis strategies for hostile input, shared by the property tests of every parser of
outside bytes: JSON values built to hurt (huge integers, NaN and infinities, NUL and lone
surrogates, deep nesting, wrong types), a valid document with one value replaced by such a
thing, and byte-level damage to a valid message (flips, cuts, insertions).
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


@dataclass(frozen=True)
class Raw:
    """JSON text put into a document as it is: what json.dumps cannot write (a number of
    5,000 digits, which Python's int-to-str limit refuses; nesting deeper than json's own
    recursion)."""

    text: str


def deep(depth: int) -> Raw:
    """Objects and arrays nested `depth` levels."""
    return Raw('{"a":[' * (depth // 2) + "0" + "]}" * (depth // 2))


# Integers at and past the edges of every store they may reach: SQLite and PostgreSQL
# bigint (2^63), uint64; numbers past Python's int-to-str limit (4300 digits) and past a
# double.
EDGE_INTEGERS = st.sampled_from(
    [
        -1,
        0,
        2**31,
        2**63 - 1,
        2**63,
        2**64,
        -(2**63) - 1,
        10**300,
        Raw("9" * 5000),
        Raw("-" + "1" * 5000),
        Raw("1e400"),
        Raw("-1e99999"),
        Raw("1" * 400 + ".5"),
    ]
)
HOSTILE_FLOATS = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324])
HOSTILE_TEXT = st.one_of(
    st.text(),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00",
            "\ud800",
            "x\udfff",
            "\u202e",
            "=cmd|' /C calc'!A0",
            "x" * 100_000,
            "1" * 5000,
            "../../etc/passwd",
            "2026-13-45T25:61:61Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "2026-11-25T10:00:00",
            "2026-11-25T10:00:00+25:00",
        ]
    ),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    EDGE_INTEGERS,
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_FLOATS,
    HOSTILE_TEXT,
)
HOSTILE_JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


def dumps(value: Any) -> bytes:
    """JSON as a hostile sender writes it: NaN and Infinity allowed, lone surrogates kept as
    escapes (ensure_ascii), `Raw` text as it is."""
    marker = f"raw-{uuid.uuid4().hex}-"
    raws: list[str] = []

    def swap(inner: Any) -> Any:
        if isinstance(inner, Raw):
            raws.append(inner.text)
            return f"{marker}{len(raws) - 1}"
        if isinstance(inner, dict):
            return {key: swap(v) for key, v in inner.items()}
        if isinstance(inner, list):
            return [swap(v) for v in inner]
        return inner

    text = json.dumps(swap(value), allow_nan=True)
    for i, raw in reversed(list(enumerate(raws))):
        text = text.replace(f'"{marker}{i}"', raw)
    return text.encode()


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document, the document itself first."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += paths(inner, (*prefix, index))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of `value` with the value at `path` replaced by `new`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = replaced(copy[head], rest, new)
    return copy


@st.composite
def one_value_replaced(draw: st.DrawFn, document: Any) -> Any:
    """`document` with one value somewhere in it replaced by hostile JSON, or a key added."""
    path = draw(st.sampled_from(paths(document)))
    if draw(st.booleans()) or not path:
        return replaced(document, path, draw(HOSTILE_JSON))
    parent_path, _ = path[:-1], path[-1]
    parent = document
    for step in parent_path:
        parent = parent[step]
    if isinstance(parent, dict):  # an unknown key beside a known one
        return replaced(document, parent_path, {**parent, draw(st.text(max_size=12)): 1})
    return replaced(document, path, draw(HOSTILE_JSON))


@st.composite
def damaged(draw: st.DrawFn, message: bytes) -> bytes:
    """`message` with a few bytes flipped, cut out, inserted or the whole cut short."""
    data = bytearray(message)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` split at the given offsets (taken modulo its length), as a serial port
    delivers it: in pieces that respect nothing."""
    if not data:
        return []
    points = sorted({c % len(data) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]
