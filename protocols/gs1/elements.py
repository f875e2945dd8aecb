"""GS1 data read element by element (pure: no I/O, no clock): every application identifier
a label carries, not only its key (dates, quantities, documents, the GLNs of its parties).

Parsing is biip's, called in this package only: `keys.py` reads a key out of the same
parse and the scanner (`protocols/scanner/gs1.py`) reads a whole label with it. A text that is not
well-formed GS1 data of the form asked raises `NotGs1Data`, whose message is the parser's
reason (the scanner shows it as the misread's).

`check_dates`: whether a date AI that is not a date (`(17)261340`) makes the whole text
unreadable. The scanner reads it anyway and reports the date itself, so that one bad date
does not sink a label; day 00 means the month's last day either way (GS1 General
Specifications 3.4).
"""

from __future__ import annotations

from biip import ParseConfig, ParseError
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString
from biip.gs1_messages import GS1Message

GS = "\x1d"  # FNC1 in a scanned element string

# One AI and its value as the parser read it: `.ai.ai`, `.ai.data_title`, `.value`, `.date`
# (date AIs), and `.gtin_error`, `.sscc_error`, `.gln_error` (a key whose check digit fails).
Element = GS1ElementString


class NotGs1Data(ValueError):
    """Not well-formed GS1 data of the form asked; the message says why."""


def _config(check_dates: bool) -> ParseConfig:
    return ParseConfig(separator_chars=[GS], gs1_element_strings_verify_date=check_dates)


def read_element_string(text: str, *, check_dates: bool = True) -> list[Element]:
    """The elements of an element string with FNC1 as the ASCII GS character."""
    try:
        return list(GS1Message.parse(text, config=_config(check_dates)).element_strings)
    except ParseError as err:
        raise NotGs1Data(str(err)) from err


def read_bracketed(text: str, *, check_dates: bool = True) -> list[Element]:
    """The elements of the bracketed, human-readable form `(01)...(10)...`."""
    try:
        return list(GS1Message.parse_hri(text, config=_config(check_dates)).element_strings)
    except ParseError as err:
        raise NotGs1Data(str(err)) from err


def read_digital_link(text: str, *, check_dates: bool = True) -> list[Element]:
    """The elements of a GS1 Digital Link URI as the standard's full grammar reads it:
    any primary key, its qualifiers, and data attributes in the query (`?17=260200`). A
    web address is needed (`keys.from_digital_link` reads a key without one)."""
    try:
        return list(GS1DigitalLinkURI.parse(text, config=_config(check_dates)).element_strings)
    except (ParseError, ValueError) as err:  # ValueError: urlsplit refuses the address
        raise NotGs1Data(str(err)) from err


def read_element(ai_and_value: str, *, check_dates: bool = True) -> Element:
    """One element written as its AI followed by its value (`0109501101530003`)."""
    try:
        return GS1ElementString.parse(ai_and_value, config=_config(check_dates))
    except ParseError as err:
        raise NotGs1Data(str(err)) from err
