"""GS1 data read element by element: every AI of a label in each form, dates checked or
left to the caller, and whatever is not GS1 data refused with the parser's reason as one
error type. The parser is called from this package only."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from protocols import gs1

ROOT = Path(__file__).resolve().parents[3]

READ = {
    "element string": (gs1.read_element_string, "0109501101530003172602001012345A\x1d2198765"),
    "bracketed": (gs1.read_bracketed, "(01)09501101530003(17)260200(10)12345A(21)98765"),
    "digital link": (
        gs1.read_digital_link,
        "https://id.gs1.org/01/09501101530003/10/12345A/21/98765?17=260200",
    ),
}


@pytest.mark.parametrize("form", list(READ))
def test_every_form_of_one_label_gives_its_elements(form: str) -> None:
    read, text = READ[form]
    elements = {e.ai.ai: e.value for e in read(text)}
    assert elements == {"01": "09501101530003", "17": "260200", "10": "12345A", "21": "98765"}


def test_a_date_that_is_none_is_refused_or_left_to_the_caller() -> None:
    with pytest.raises(gs1.NotGs1Data, match="260231"):
        gs1.read_bracketed("(01)09501101530003(17)260231")
    _, expiry = gs1.read_bracketed("(01)09501101530003(17)260231", check_dates=False)
    assert (expiry.value, expiry.date) == ("260231", None)
    last_day = gs1.read_element("17260200")  # day 00: the month's last day
    assert str(last_day.date) == "2026-02-28"


def test_a_wrong_check_digit_is_read_and_flagged() -> None:
    (gtin,) = gs1.read_element_string("0109501101530004")
    assert gtin.value == "09501101530004" and gtin.gtin_error


@pytest.mark.parametrize(
    ("read", "text"),
    [
        (gs1.read_element_string, "0109501101"),  # a GTIN cut short
        (gs1.read_element_string, "99"),  # an AI with nothing after it
        (gs1.read_bracketed, "(01)"),
        (gs1.read_bracketed, "(4711)ABC"),  # no such AI
        (gs1.read_digital_link, "https://example.com/manual/01"),
        (gs1.read_digital_link, "http://[::1"),  # not even a web address
        (gs1.read_element, "01ABC"),
    ],
    ids=repr,
)
def test_what_is_not_gs1_data_is_refused_with_the_reason(
    read: Callable[[str], object], text: str
) -> None:
    with pytest.raises(gs1.NotGs1Data) as err:
        read(text)
    assert str(err.value), "the parser's reason, for the misread it becomes"


def test_the_parser_is_called_from_this_package_only() -> None:
    importing = re.compile(r"^\s*(from|import) biip\b", re.MULTILINE)
    outside = [
        str(path.relative_to(ROOT))
        for package in ("protocols", "device_profiles", "edge_agent", "cloud_collector", "tracectl")
        for path in (ROOT / package).rglob("*.py")
        if importing.search(path.read_text()) and path.parent != ROOT / "protocols" / "gs1"
    ]
    assert outside == [], "parse GS1 data through protocols.gs1"
