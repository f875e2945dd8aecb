"""GS1 keys inside EPCIS identifiers, and CBV vocabulary in one spelling.

An EPC is written as a URN (`urn:epc:id:sgtin:0614141.107346.2018`) or a GS1 Digital Link
URI (`https://id.gs1.org/01/00614141073467/21/2018`); the genealogy and the queries join on
the plain keys (GTIN-14, lot, serial, SSCC) whichever form a partner used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from cloud_collector.trace import LGTIN_URN, SSCC_URN, gtin_of_lgtin
from protocols.rfid.epc import gs1_check_digit

# bizStep / disposition / ... : a CBV word, however it is spelled, becomes the bare word.
CBV_PREFIXES: dict[str, tuple[str, ...]] = {
    "bizStep": ("urn:epcglobal:cbv:bizstep:", "https://ref.gs1.org/cbv/BizStep-"),
    "disposition": ("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-"),
    "bizTransactionType": ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-"),
    "sourceDestType": ("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-"),
    "errorReason": ("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-"),
}


def cbv_word(kind: str, value: str | None) -> str | None:
    """`urn:epcglobal:cbv:bizstep:receiving` and `https://ref.gs1.org/cbv/BizStep-receiving`
    -> `receiving`; anything else (a private vocabulary URI) unchanged."""
    if value is None:
        return None
    for prefix in CBV_PREFIXES[kind]:
        if value.startswith(prefix):
            return value[len(prefix) :]
    return value


@dataclass(frozen=True)
class Keys:
    gtin: str | None = None
    lot: str | None = None
    serial: str | None = None
    sscc: str | None = None
    pattern: str | None = None  # a LIKE pattern for an EPC pattern (urn:epc:idpat:...)


_SGTIN = re.compile(r"^urn:epc:id:sgtin:(\d+)\.(\d+)\.(.+)$")
_IDPAT = re.compile(r"^urn:epc:idpat:(\w+):(.*)$")
_DL_GTIN = re.compile(r"/01/(\d{14})(?:/10/([^/?#]+))?(?:/21/([^/?#]+))?(?:[/?#]|$)")
_DL_SSCC = re.compile(r"/00/(\d{18})(?:[/?#]|$)")


def gtin(company_prefix: str, indicator_item: str) -> str | None:
    """GTIN-14 of an EPC's company prefix and indicator digit + item reference (None when
    the two do not add up to 13 digits: a partner's EPC is not trusted to be well formed)."""
    if len(company_prefix) + len(indicator_item) != 13:
        return None
    return gtin_of_lgtin(company_prefix, indicator_item)


def keys(identifier: str) -> Keys:
    """The GS1 keys an EPC or EPC class names; empty Keys when it names none we know."""
    if m := _SGTIN.match(identifier):
        return Keys(gtin=gtin(m[1], m[2]), serial=unquote(m[3]))
    if m := LGTIN_URN.match(identifier):
        return Keys(gtin=gtin(m[1], m[2]), lot=unquote(m[3]))
    if m := SSCC_URN.match(identifier):
        body = m[2][0] + m[1] + m[2][1:]
        return Keys(sscc=body + gs1_check_digit(body) if len(body) == 17 else None)
    if m := _IDPAT.match(identifier):
        return _pattern(m[1], m[2])
    if identifier.startswith(("http://", "https://")):
        if m := _DL_SSCC.search(identifier):
            return Keys(sscc=m[1])
        if m := _DL_GTIN.search(identifier):
            return Keys(
                gtin=m[1],
                lot=unquote(m[2]) if m[2] else None,
                serial=unquote(m[3]) if m[3] else None,
            )
    return Keys()


def _pattern(scheme: str, rest: str) -> Keys:
    """`urn:epc:idpat:sgtin:0614141.107346.*` -> the LIKE pattern of the ids it covers, and
    the GTIN when the pattern fixes it."""
    # Up to the first wildcard, its dot kept: 0614141.* must not match 06141412.
    fixed = rest[: rest.index("*")] if "*" in rest else rest
    parts = fixed.split(".")
    found = Keys(pattern=f"urn:epc:id:{scheme}:{_like_escape(fixed)}%")
    if scheme == "sgtin" and len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
        return Keys(gtin=gtin(parts[0], parts[1]), pattern=found.pattern)
    return found


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
