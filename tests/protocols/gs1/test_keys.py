"""GS1 keys in every form against the standards' examples (cases.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols import gs1

CASES = yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text())
FIELDS = ("gtin", "lot", "serial", "sscc", "gln", "extension", "grai")


@pytest.mark.parametrize("case", CASES["parsed"], ids=[repr(c["text"]) for c in CASES["parsed"]])
def test_each_form_names_its_key(case: dict[str, Any]) -> None:
    key = gs1.parse(case["text"])
    assert key is not None
    expected = case["key"]
    assert key.kind == expected["kind"]
    assert {f: getattr(key, f) for f in FIELDS} == {f: expected.get(f) for f in FIELDS}


@pytest.mark.parametrize(
    "case", [c for c in CASES["parsed"] if len(c) > 2], ids=lambda c: repr(c["text"])
)
def test_each_key_is_written_back_in_each_form(case: dict[str, Any]) -> None:
    key = gs1.parse(case["text"])
    assert key is not None
    if "urn" in case:
        assert gs1.urn(key, case["prefix"]) == case["urn"]
        assert gs1.parse(case["urn"]) == key
    if "digital_link" in case:
        assert gs1.digital_link(key) == case["digital_link"]
        assert gs1.parse(case["digital_link"]) == key
        # Without a host the path alone names the same key.
        assert gs1.parse(gs1.digital_link(key, host="")) == key
    if "element_string" in case:
        assert gs1.element_string(key) == case["element_string"]
        assert gs1.parse(case["element_string"]) == key


@pytest.mark.parametrize("text", CASES["unparsed"], ids=repr)
def test_texts_that_name_no_key(text: str) -> None:
    assert gs1.parse(text) is None
    assert gs1.company_prefix(text) is None


@pytest.mark.parametrize("case", CASES["check_digits"], ids=lambda c: c["body"] or "empty")
def test_check_digits(case: dict[str, str]) -> None:
    assert gs1.check_digit(case["body"]) == case["digit"]
    full = gs1.with_check_digit(case["body"])
    if case["body"]:
        assert gs1.valid(full)
        wrong = full[:-1] + str((int(full[-1]) + 1) % 10)
        assert not gs1.valid(wrong)


def test_a_urn_needs_a_company_prefix_of_six_to_twelve_digits() -> None:
    key = gs1.parse("urn:epc:id:sscc:0614141.1234567890")
    assert key is not None
    with pytest.raises(ValueError, match="6 to 12 digits"):
        gs1.urn(key, 13)
    with pytest.raises(ValueError, match="no EPC URN"):
        gs1.urn(gs1.Key("gtin", gtin="09506000134352"), 7)


def test_a_label_with_several_keys_links_to_its_first() -> None:
    key = gs1.parse("(00)106141412345678908(01)09506000134352(10)ABC")
    assert key is not None
    assert gs1.digital_link(key) == "https://id.gs1.org/00/106141412345678908"


@pytest.mark.parametrize("case", CASES["company_prefixes"], ids=lambda c: repr(c["text"]))
def test_company_prefix_in_each_form(case: dict[str, Any]) -> None:
    assert gs1.company_prefix(case["text"]) == case["prefix"]
