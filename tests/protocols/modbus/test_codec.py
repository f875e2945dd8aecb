"""The pure register codec: round trips and read planning."""

from __future__ import annotations

import pytest

from device_profiles.schema import ModbusTag
from protocols.modbus.codec import decode_raw, decode_tag, encode_raw, encode_tag, plan_reads


@pytest.mark.parametrize("data_type", ["int16", "uint16", "int32", "uint32", "float32", "float64"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_encode_then_decode_gives_the_value_back(data_type: str, byte_order, word_order) -> None:  # type: ignore[no-untyped-def]
    value = {
        "int16": -1234,
        "uint16": 54321,
        "int32": -123456789,
        "uint32": 3_000_000_000,
        "float32": 1.5,
        "float64": -2.718281828459045,
    }[data_type]
    registers = encode_raw(value, data_type, byte_order, word_order)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode_raw(registers, data_type, byte_order, word_order) == value


def test_scale_and_offset_apply_both_ways() -> None:
    tag = ModbusTag(name="t", address=0, data_type="int16", scale=0.1, offset=-40)
    assert encode_tag(tag, 21.5) == [615]
    assert decode_tag(tag, [615]) == pytest.approx(21.5)


def test_wrong_register_count_is_an_error_naming_the_type() -> None:
    with pytest.raises(ValueError, match="float32 needs 2 registers, got 1"):
        decode_raw([1], "float32")


def tag(name: str, address: int, data_type: str = "uint16", table: str = "holding") -> ModbusTag:
    return ModbusTag(name=name, address=address, data_type=data_type, table=table)  # type: ignore[arg-type]


def test_adjacent_registers_share_one_request_per_table() -> None:
    blocks = plan_reads(
        [tag("a", 0, "float32"), tag("b", 2), tag("c", 5), tag("d", 0, table="input")]
    )
    assert [(b.table, b.start, b.count, [t.name for t in b.tags]) for b in blocks] == [
        ("holding", 0, 6, ["a", "b", "c"]),
        ("input", 0, 1, ["d"]),
    ]


def test_far_apart_registers_and_the_125_register_limit_split_requests() -> None:
    blocks = plan_reads([tag("a", 0), tag("b", 100), tag("c", 124), tag("d", 125, "float32")])
    assert [(b.start, b.count) for b in blocks] == [(0, 1), (100, 1), (124, 3)]
    blocks = plan_reads([tag(f"t{i}", i * 4, "float64") for i in range(40)])
    assert all(b.count <= 125 for b in blocks)
    assert sum(len(b.tags) for b in blocks) == 40 and len(blocks) == 2
