"""What a barcode scan says, in GS1 terms (pure: no I/O, no clock).

A scanner sends one of four things, and `parse_scan` tells them apart:

- a GS1 element string: GS1-128, GS1 DataMatrix, GS1 QR or GS1 DataBar, with FNC1 sent as
  the ASCII GS character (0x1D) after each variable-length field;
- the bracketed human-readable form printed under such a barcode, `(01)...(10)...`
  (a keyed-in label, or a 2D code that carries it as text);
- a GS1 Digital Link URI, `https://id.gs1.org/01/.../10/...`;
- anything else (a work-order label `WO-12345`, an operator badge `OP-0042`): plain text.

Parsing and check digits are the GS1 module's (`protocols/gs1`: `elements.py` reads a
label element by element); this module adds what the edge needs on top: which form a scan
is in, one flat record per scan, a canonical text for scan rules to match, and problems
reported in `errors` rather than raised, because a scan with a bad check digit is still a
fact worth recording.

What looks like GS1 data and is not well-formed GS1 data is a **misread**, never plain
text: a partly read or misprinted label taken for a plain code could match a rule written
for work orders or badges, and a wrong digit in a GTIN or SSCC names someone else's goods.
A scan looks like GS1 data when it has a GS1 symbology identifier (]C1, ]d2, ]Q3, ]e0,
]J1, ]E0, ]E4), a GS separator, starts with a bracketed AI `(01)`, starts with a complete
SSCC or GTIN field (`00` + 18 digits, `01`/`02` + 14 digits), or is a web address whose
path names a GS1 key (`/01/` followed by digits; see `_looks_like_digital_link`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Literal

from protocols.gs1 import (
    GS,  # what a scanner sends for FNC1
    Element,
    NotGs1Data,
    check_digit,
    digits,
    read_bracketed,
    read_digital_link,
    read_element,
    read_element_string,
)

Kind = Literal["element_string", "hri", "digital_link", "gtin", "plain"]

# AIM symbology identifiers (ISO/IEC 15424) a scanner can put in front of each scan, and
# how the edge reads what follows. Only the ones that change the reading are listed; any
# other identifier is stripped and its data read by content.
SYMBOLOGIES: dict[str, tuple[str, Literal["gs1", "gtin", "text"]]] = {
    "]C1": ("GS1-128", "gs1"),
    "]d2": ("GS1 DataMatrix", "gs1"),
    "]Q3": ("GS1 QR Code", "gs1"),
    "]e0": ("GS1 DataBar", "gs1"),
    "]J1": ("GS1 DotCode", "gs1"),
    "]E0": ("EAN-13 / UPC-A", "gtin"),
    "]E4": ("EAN-8", "gtin"),
    "]C0": ("Code 128", "text"),
    "]A0": ("Code 39", "text"),
    "]d1": ("Data Matrix", "text"),
    "]Q1": ("QR Code", "text"),
}
_SYMBOLOGY = re.compile(r"\][A-Za-z][0-9A-Za-z]")

# Who each GLN application identifier names: the field of Gs1Scan.glns it fills.
GLN_ROLES: dict[str, str] = {
    "410": "ship_to",
    "411": "bill_to",
    "412": "purchased_from",
    "413": "ship_for",
    "414": "location",
    "415": "invoicing_party",
    "416": "production",
    "417": "party",
}

# Without a symbology identifier digits count as GS1 data only when they start with a whole
# SSCC or GTIN field: nearly every number starts with some AI (12345678 with AI 12), but
# a plain number that is 18 or 14 digits long right after 00, 01 or 02 is rare, while a GS1
# label read with its identifier switched off is common. The key's check digit must then
# hold, else the scan is a misread.
_LEADING_KEY = re.compile(r"00[0-9]{18}|0[12][0-9]{14}")

# The bracketed form: an AI of two to four digits in brackets at the start.
_HRI_START = re.compile(r"\s*\([0-9]{2,4}\)")
# ...and as a whole: (AI)value groups, every AI with a value and nothing in between. biip
# skips what does not fit this (an empty `(10)`, a stray bracket), which would lose a field
# without a word.
_HRI_WHOLE = re.compile(r"(?:\([0-9]{2,4}\)[^()\s]+)+")

# The primary keys a GS1 Digital Link URI path starts with (the same keys as biip's table
# of primary identifiers).
_DIGITAL_LINK_KEYS = "00|01|253|255|401|402|414|415|417|8003|8004|8006|8010|8013|8017|8018"
# A key segment followed by the start of a GS1 company prefix (at least 6 digits): a web
# address carrying a GS1 key, unlike a date in a path (`/2024/01/15/`) or `/01/manual`.
_KEY_IN_PATH = re.compile(rf"/(?:{_DIGITAL_LINK_KEYS})/[0-9]{{6}}")
# On GS1's own resolver any key segment counts, however short what follows.
_GS1_RESOLVER = re.compile(r"https?://id\.gs1\.org(?::[0-9]+)?/", re.IGNORECASE)
_KEY_SEGMENT = re.compile(rf"/(?:{_DIGITAL_LINK_KEYS})/")
# biip pads a GTIN in a path with zeros to 14 digits whatever its length; only these
# lengths are GTINs.
_GTIN_IN_PATH = re.compile(r"/01/([^/?#]*)")
_GTIN_LENGTHS = (8, 12, 13, 14)

# Date checking is ours (the elements are read with check_dates=False) so that one bad
# date does not sink the scan.
_DATE_AIS = {"11", "12", "13", "15", "16", "17"}


@dataclass(frozen=True, slots=True)
class Gs1Scan:
    """One scan, read as GS1 data where it is GS1 data.

    `text` is what scan rules match: for GS1 data its bracketed form `(01)...(10)...`,
    whatever form it arrived in, so one pattern serves GS1-128, DataMatrix and Digital
    Link alike; for plain text, the text as scanned. `raw` is always the text as scanned
    (symbology identifier removed).

    Fields are filled whatever the check digits say; `check_digits_ok` and `errors` say
    whether to trust them. A scan with errors is a misread (`misread` gives the reason):
    no scan rule matches it.
    """

    raw: str
    text: str
    kind: Kind
    ais: dict[str, str] = field(default_factory=dict)
    gtin: str | None = None  # AI 01, always 14 digits
    lot: str | None = None  # AI 10
    serial: str | None = None  # AI 21
    expiry: dt.date | None = None  # AI 17
    sscc: str | None = None  # AI 00, 18 digits
    quantity: int | None = None  # AI 37 (units in a logistic unit), else AI 30
    glns: dict[str, str] = field(default_factory=dict)  # GLN_ROLES name -> GLN
    purchase_order: str | None = None  # AI 400
    shipment_id: str | None = None  # AI 402 (GSIN)
    check_digits_ok: bool = True
    errors: list[str] = field(default_factory=list)

    @property
    def misread(self) -> str | None:
        """Why this scan, which looks like GS1 data, is not well-formed GS1 data; None for
        well-formed GS1 data and for plain text."""
        return "; ".join(self.errors) if self.errors else None

    @property
    def is_gs1(self) -> bool:
        """Well-formed GS1 data: read, every check digit and date holds."""
        return bool(self.ais) and not self.errors


def split_symbology(text: str) -> tuple[str | None, str]:
    """(`]C1`, the rest) when `text` starts with an AIM symbology identifier, else (None, text)."""
    if _SYMBOLOGY.match(text):
        return text[:3], text[3:]
    return None, text


def parse_scan(text: str, symbology: str | None = None) -> Gs1Scan:
    """Read one scan. `symbology` is the identifier the framing stripped, if any; one still
    in front of `text` is stripped here."""
    if symbology is None:
        symbology, text = split_symbology(text)
    reading = SYMBOLOGIES.get(symbology or "", ("", "text"))[1]
    data = text.strip(GS)  # a leading GS is FNC1 in first position, sent by some scanners

    web_address = re.match(r"https?://", data, re.IGNORECASE) is not None
    if web_address and _looks_like_digital_link(data):
        return _digital_link(text, data)
    if reading == "gtin":
        return _bare_gtin(text, data)
    if reading == "gs1":
        return _element_string(text, data)
    if _HRI_START.match(data):
        return _hri(text, data)
    if GS in data or text.startswith(GS):  # FNC1 sent as GS: between fields or in front
        return _element_string(text, data)
    if web_address:
        return Gs1Scan(raw=text, text=text, kind="plain")  # a web address, not GS1 data
    if symbology is None and _LEADING_KEY.match(data):
        return _element_string(text, data)
    return Gs1Scan(raw=text, text=text, kind="plain")


def _looks_like_digital_link(url: str) -> bool:
    if _KEY_IN_PATH.search(url):
        return True
    return bool(_GS1_RESOLVER.match(url) and _KEY_SEGMENT.search(url))


def _element_string(raw: str, data: str) -> Gs1Scan:
    try:
        elements = read_element_string(data, check_dates=False)
    except NotGs1Data as err:
        return _unreadable(
            raw,
            "element_string",
            f"not a valid GS1 element string ({err}): check that the scanner sends FNC1 "
            "as GS (0x1D) and rescan",
        )
    return _from_elements(raw, "element_string", elements)


def _hri(raw: str, data: str) -> Gs1Scan:
    # Spaces around the brackets are how labels print it; spaces inside a value are not
    # GS1 characters.
    compact = re.sub(r"\s*([()])\s*", r"\1", data.strip())
    if not _HRI_WHOLE.fullmatch(compact):
        return _unreadable(
            raw,
            "hri",
            "not a valid bracketed GS1 string: expected (AI)value groups such as "
            "(01)09501101530003(10)LOT-7, each AI followed by its value",
        )
    try:
        elements = read_bracketed(compact, check_dates=False)
    except NotGs1Data as err:
        return _unreadable(raw, "hri", f"not a valid bracketed GS1 string ({err})")
    return _from_elements(raw, "hri", elements)


def _digital_link(raw: str, data: str) -> Gs1Scan:
    try:
        elements = read_digital_link(data, check_dates=False)
    except NotGs1Data as err:
        return _unreadable(raw, "digital_link", f"not a valid GS1 Digital Link URI ({err})")
    scan = _from_elements(raw, "digital_link", elements)
    gtin = _GTIN_IN_PATH.search(data)
    if gtin is not None and len(gtin.group(1)) not in _GTIN_LENGTHS:
        short = (
            f"AI 01 (GTIN) {gtin.group(1)!r} in the web address has {len(gtin.group(1))} "
            "characters: a GTIN has 8, 12, 13 or 14 digits: rescan; if it repeats, the "
            "label is misprinted"
        )
        return dataclasses.replace(scan, errors=[*scan.errors, short])
    return scan


def _bare_gtin(raw: str, data: str) -> Gs1Scan:
    if not (digits(data) and len(data) in (8, 12, 13, 14)):
        return _unreadable(raw, "gtin", f"{data!r} is not a GTIN (8, 12, 13 or 14 digits)")
    try:
        element = read_element("01" + data.zfill(14), check_dates=False)
    except NotGs1Data as err:  # pragma: no cover - digits of the right length always match
        return _unreadable(raw, "gtin", str(err))
    return _from_elements(raw, "gtin", [element])


def _unreadable(raw: str, kind: Kind, error: str) -> Gs1Scan:
    return Gs1Scan(raw=raw, text=raw, kind=kind, errors=[error])


def _from_elements(raw: str, kind: Kind, elements: list[Element]) -> Gs1Scan:
    if not elements:  # biip reads "" (a GS1 identifier with nothing after it) as no data
        return _unreadable(raw, kind, "not a valid GS1 element string: it holds no data: rescan")
    ais: dict[str, str] = {}
    errors: list[str] = []
    check_digits_ok = True
    expiry: dt.date | None = None
    for element in elements:
        ai, value = element.ai.ai, element.value
        if ai in ais:
            if ais[ai] != value:
                errors.append(
                    f"AI {ai} appears twice with different values ({ais[ai]!r}, {value!r}): "
                    "the label contradicts itself; the first value is kept"
                )
            continue
        ais[ai] = value
        if not value:  # biip lets AI 30, 7004 and 8003's optional parts be empty
            errors.append(
                f"AI {ai} ({element.ai.data_title}) has no value: rescan; if it repeats, "
                "the label is misprinted"
            )
            continue
        bad_digit = _check_digit_error(element)
        if bad_digit is not None:
            check_digits_ok = False
            errors.append(bad_digit)
        if ai in _DATE_AIS and element.date is None:
            errors.append(
                f"AI {ai} ({element.ai.data_title}) {value!r} is not a date (YYMMDD): "
                "the label is misprinted"
            )
        if ai == "17":
            expiry = element.date
    quantity = ais.get("37") or ais.get("30")
    return Gs1Scan(
        raw=raw,
        text="".join(f"({ai}){value}" for ai, value in ais.items()),
        kind=kind,
        ais=ais,
        gtin=ais.get("01"),
        lot=ais.get("10"),
        serial=ais.get("21"),
        expiry=expiry,
        sscc=ais.get("00"),
        quantity=int(quantity) if quantity else None,
        glns={role: ais[ai] for ai, role in GLN_ROLES.items() if ai in ais},
        purchase_order=ais.get("400"),
        shipment_id=ais.get("402"),
        check_digits_ok=check_digits_ok,
        errors=errors,
    )


def _check_digit_error(element: Element) -> str | None:
    ai, value = element.ai.ai, element.value
    failed = element.gtin_error or element.sscc_error or element.gln_error
    if failed is None and ai == "402":  # the parser does not check the GSIN
        # Its digits as the parser takes them (any Unicode digit, as for GTINs and SSCCs).
        failed = "" if check_digit(value[:-1]) != str(int(value[-1])) else None
    if failed is None:
        return None
    expected = check_digit(value[:-1]) if digits(value) else None
    return (
        f"AI {ai} ({element.ai.data_title}) {value}: check digit {value[-1]} is wrong"
        + (f", expected {expected}" if expected is not None else "")
        + ": rescan; if it repeats, the label is misprinted"
    )
