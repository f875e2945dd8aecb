"""Each folder under framing_cases/ is a stretch of line traffic: the chunks as they
arrived (hex for mercury, text for ascii), whether the line then went quiet, the tag
records the decoder must give and what it must have counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.rfid.client import new_decoder

CASES = sorted(p for p in (Path(__file__).parent / "framing_cases").iterdir() if p.is_dir())


def chunk_bytes(framing: str, chunk: Any) -> bytes:
    assert isinstance(chunk, str), f"chunk {chunk!r} must be a string: quote it in the YAML"
    if framing == "mercury":
        return bytes.fromhex(chunk)
    return chunk.encode("latin-1")  # \x80 and friends stand for raw bytes on the line


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_framing_case(case: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    decoder = new_decoder(spec["framing"])
    records = []
    for chunk in spec["chunks"]:
        records += decoder.feed(chunk_bytes(spec["framing"], chunk))
    if spec.get("idle"):
        records += decoder.idle()
    got = [
        {"epc": r.epc_hex, "antenna": r.antenna, "rssi_dbm": r.rssi_dbm, "pc": r.pc}
        for r in records
    ]
    assert got == [{**r, "epc": str(r["epc"])} for r in spec["records"]]
    counters = decoder.counters
    assert {k: getattr(counters, k) for k in spec["counters"]} == spec["counters"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_framing_case_fed_one_byte_at_a_time(case: Path) -> None:
    """The same traffic, one byte per chunk: the worst split a serial port can deliver."""
    spec = yaml.safe_load((case / "case.yaml").read_text())
    whole = b"".join(chunk_bytes(spec["framing"], c) for c in spec["chunks"])
    decoder = new_decoder(spec["framing"])
    records = []
    for i in range(len(whole)):
        records += decoder.feed(whole[i : i + 1])
    if spec.get("idle"):
        records += decoder.idle()
    assert [r.epc_hex for r in records] == [str(r["epc"]) for r in spec["records"]]
    assert decoder.counters.bad_frames == spec["counters"].get("bad_frames", 0)
