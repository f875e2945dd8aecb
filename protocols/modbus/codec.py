"""Modbus register codec: registers <-> engineering values, and read planning.

Pure functions, no sockets and no clock, so every byte/word order case is testable alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from protocols.modbus.profile import REGISTER_COUNT, ModbusTag

# struct format per data type (big-endian once registers are put in wire order).
_FORMAT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "float64": ">d",
}

# The protocol's own limit on registers in one read request (FC3/FC4).
MAX_REGISTERS_PER_READ = 125


def _to_wire(registers: list[int], byte_order: str, word_order: str) -> bytes:
    words = list(registers) if word_order == "big" else list(reversed(registers))
    return b"".join(w.to_bytes(2, "big" if byte_order == "big" else "little") for w in words)


def decode_raw(
    registers: list[int],
    data_type: str,
    byte_order: Literal["big", "little"] = "big",
    word_order: Literal["big", "little"] = "big",
) -> float:
    """The raw number held in `registers` (most significant word first when word_order is big)."""
    count = REGISTER_COUNT[data_type]
    if len(registers) != count:
        raise ValueError(f"{data_type} needs {count} registers, got {len(registers)}")
    (value,) = struct.unpack(_FORMAT[data_type], _to_wire(registers, byte_order, word_order))
    return float(value)


def encode_raw(
    value: float,
    data_type: str,
    byte_order: Literal["big", "little"] = "big",
    word_order: Literal["big", "little"] = "big",
) -> list[int]:
    """The registers that hold `value`; the inverse of decode_raw (used by simulators)."""
    fmt = _FORMAT[data_type]
    raw = struct.pack(fmt, value if data_type.startswith("float") else round(value))
    words = [
        int.from_bytes(raw[i : i + 2], "big" if byte_order == "big" else "little")
        for i in range(0, len(raw), 2)
    ]
    return words if word_order == "big" else list(reversed(words))


def decode_tag(tag: ModbusTag, registers: list[int]) -> float:
    """Engineering value: raw * scale + offset."""
    raw = decode_raw(registers, tag.data_type, tag.byte_order, tag.word_order)
    return raw * tag.scale + tag.offset


def encode_tag(tag: ModbusTag, value: float) -> list[int]:
    return encode_raw(
        (value - tag.offset) / tag.scale, tag.data_type, tag.byte_order, tag.word_order
    )


@dataclass(frozen=True)
class ReadBlock:
    """One read request: `count` registers of `table` from `start`, serving `tags`."""

    table: str
    start: int
    count: int
    tags: tuple[ModbusTag, ...]

    def slice_for(self, tag: ModbusTag, registers: list[int]) -> list[int]:
        at = tag.address - self.start
        return registers[at : at + tag.register_count]


def plan_reads(
    tags: list[ModbusTag], max_registers: int = MAX_REGISTERS_PER_READ, max_gap: int = 8
) -> list[ReadBlock]:
    """Group tags into as few requests as the protocol allows.

    Tags of one table whose registers lie within `max_gap` unused registers of each other
    share a request, as long as the request stays within `max_registers`. Reading a few
    unused registers is cheaper than a round trip; devices that refuse reads of unmapped
    registers need max_gap=0.
    """
    blocks: list[ReadBlock] = []
    for table in ("holding", "input"):
        current: list[ModbusTag] = []
        start = end = 0
        for tag in sorted((t for t in tags if t.table == table), key=lambda t: t.address):
            tag_end = tag.address + tag.register_count
            if (
                current
                and tag.address - end <= max_gap
                and max(end, tag_end) - start <= max_registers
            ):
                current.append(tag)
                end = max(end, tag_end)
                continue
            if current:
                blocks.append(ReadBlock(table, start, end - start, tuple(current)))
            current, start, end = [tag], tag.address, tag_end
        if current:
            blocks.append(ReadBlock(table, start, end - start, tuple(current)))
    return blocks
