"""EPC decoding against the Tag Data Standard's examples (epc_cases.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.gs1 import check_digit as gs1_check_digit
from protocols.rfid.epc import decode_epc

CASES = yaml.safe_load((Path(__file__).parent / "epc_cases.yaml").read_text())
FIELDS = ("scheme", "uri", "gtin", "serial", "sscc", "gln", "gln_extension", "grai")


@pytest.mark.parametrize("case", CASES["decodable"], ids=[c["uri"] for c in CASES["decodable"]])
def test_decodes_to_the_standard_identities(case: dict[str, Any]) -> None:
    decoded = decode_epc(case["hex"])
    assert decoded.hex == case["hex"].upper()
    assert decoded.reason is None
    assert {f: getattr(decoded, f) for f in FIELDS} == {f: case.get(f) for f in FIELDS}
    assert decoded.lot_class_hint == case.get("lot_class_hint")


@pytest.mark.parametrize(
    "case", CASES["undecodable"], ids=[c["reason"] for c in CASES["undecodable"]]
)
def test_undecodable_tags_are_kept_with_a_reason(case: dict[str, Any]) -> None:
    decoded = decode_epc(case["hex"])
    assert decoded.uri is None
    assert decoded.hex == case["hex"].upper()
    assert decoded.scheme == case.get("scheme")
    assert decoded.reason is not None and case["reason"] in decoded.reason


def test_check_digits_of_the_decoded_keys_are_the_gs1_ones() -> None:
    for case in CASES["decodable"]:
        decoded = decode_epc(case["hex"])
        for key in (decoded.gtin, decoded.sscc, decoded.gln):
            if key is not None:
                assert key[-1] == gs1_check_digit(key[:-1]), key
        if decoded.grai is not None:  # AI 8003: 0, GRAI-13 with its check digit, serial
            assert decoded.grai[13] == gs1_check_digit(decoded.grai[1:13])
