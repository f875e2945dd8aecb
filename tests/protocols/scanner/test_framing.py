"""Framing as data: framing_cases.yaml lists byte chunks and the scans they must make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.scanner.framing import FramedScan, ScanFramer

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "framing_cases.yaml").read_text()
)


def expected_scan(entry: str | list[str]) -> FramedScan:
    if isinstance(entry, str):
        return FramedScan(entry, None)
    symbology, text = entry
    return FramedScan(text, symbology)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    framer = ScanFramer(
        case["terminator"], **({"max_length": case["max_length"]} if "max_length" in case else {})
    )
    scans: list[FramedScan] = []
    for chunk in case["chunks"]:
        scans += framer.feed(chunk.encode("latin-1"))
    garbage = framer.garbage
    if case.get("flush"):
        scans += framer.flush()
        assert framer.garbage - garbage == case.get("flush_garbage", 0)
    assert scans == [expected_scan(s) for s in case["scans"]]
    assert garbage == case["garbage"]
    assert framer.scans == len(scans)


def test_any_chunking_of_a_stream_gives_the_same_scans() -> None:
    stream = b"]C10109501101530003\x1d10L1\r\n\x00WO-12345\r\x13noise\rOP-0042\r\n\r"
    whole = ScanFramer("\r").feed(stream)
    assert [s.text for s in whole] == ["0109501101530003\x1d10L1", "WO-12345", "OP-0042"]
    for size in range(1, 8):
        framer = ScanFramer("\r")
        parts: list[FramedScan] = []
        for i in range(0, len(stream), size):
            parts += framer.feed(stream[i : i + size])
        assert parts == whole, size
        assert framer.garbage == 1


def test_max_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_length must be at least 1, got 0"):
        ScanFramer("\r", max_length=0)
