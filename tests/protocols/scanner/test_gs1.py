"""GS1 parsing as data: gs1_cases.yaml lists what a scanner sends and what it must read as."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.scanner.gs1 import Gs1Scan, parse_scan, split_symbology

CASES: list[dict[str, Any]] = yaml.safe_load((Path(__file__).parent / "gs1_cases.yaml").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    scan = parse_scan(case["input"], case.get("symbology"))
    expected = dict(case["expected"])
    fragments = expected.pop("errors", None)
    misread = expected.pop("misread", "unchecked")
    got = {key: getattr(scan, key) for key in expected}
    assert got == expected, scan
    if fragments is not None:
        assert len(scan.errors) == len(fragments), scan.errors
        for error, fragment in zip(scan.errors, fragments, strict=True):
            assert fragment in error
    if misread is None:
        assert scan.misread is None, scan
    elif misread != "unchecked":
        assert scan.misread is not None and misread in scan.misread, scan
        assert not scan.is_gs1


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_a_scan_is_gs1_plain_or_a_misread(case: dict[str, Any]) -> None:
    scan = parse_scan(case["input"], case.get("symbology"))
    if scan.kind == "plain":
        assert (scan.ais, scan.errors, scan.misread) == ({}, [], None)
    else:
        assert scan.is_gs1 != (scan.misread is not None), scan


def test_errors_say_what_to_do() -> None:
    (error,) = parse_scan("]C1010950110153000410LOT").errors
    assert error.endswith("rescan; if it repeats, the label is misprinted")


def test_every_gs1_form_of_one_label_reads_the_same() -> None:
    forms = [
        parse_scan("]C10109501101530003172602001012345A\x1d2198765"),
        parse_scan("0109501101530003172602001012345A\x1d2198765", "]d2"),
        parse_scan("(01)09501101530003(17)260200(10)12345A(21)98765"),
        parse_scan("https://id.gs1.org/01/09501101530003/10/12345A/21/98765?17=260200"),
    ]
    assert len({(s.gtin, s.lot, s.serial, s.expiry) for s in forms}) == 1
    assert {s.kind for s in forms} == {"element_string", "hri", "digital_link"}


def test_a_plain_scan_is_gs1_only_when_it_has_ais() -> None:
    assert not parse_scan("WO-1").is_gs1
    assert parse_scan("]C100106141410000000125").is_gs1
    assert isinstance(parse_scan("x"), Gs1Scan)


def test_a_misread_is_not_gs1_data_and_says_why() -> None:
    scan = parse_scan("]C100106141410000000126")
    assert scan.ais and not scan.is_gs1
    assert scan.misread is not None and "check digit 6 is wrong, expected 5" in scan.misread


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("]C1010", ("]C1", "010")),
        ("]d2x", ("]d2", "x")),
        ("]Q3", ("]Q3", "")),
        ("WO-1", (None, "WO-1")),
        ("]", (None, "]")),
        ("]-1abc", (None, "]-1abc")),
    ],
)
def test_split_symbology(text: str, split: tuple[str | None, str]) -> None:
    assert split_symbology(text) == split
