"""GS1 keys inside EPCIS identifiers, and CBV vocabulary in one spelling.

An EPC is written as a URN (`urn:epc:id:sgtin:0614141.107346.2018`) or a GS1 Digital Link
URI (`https://id.gs1.org/01/00614141073467/21/2018`); the genealogy and the queries join on
the plain keys (GTIN-14, lot, serial, SSCC) whichever form a partner used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols import gs1

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


# The keys the genealogy joins on; an SGLN, PGLN or GRAI names none of them.
_JOINED = ("gtin", "lgtin", "sgtin", "sscc")
# An EPC pattern is no GS1 key but a set of EPCs: it becomes a LIKE pattern of their URNs.
_IDPAT = re.compile(r"^urn:epc:idpat:(\w+):(.*)$")


def keys(identifier: str) -> Keys:
    """The GS1 keys an EPC or EPC class names; empty Keys when it names none we know."""
    if m := _IDPAT.match(identifier):
        return _pattern(m[1], m[2])
    if identifier.startswith("urn:"):
        key = gs1.from_urn(identifier)
    # EPCIS identifiers are URIs: a Digital Link among them carries its host.
    elif identifier.startswith(("http://", "https://")):
        key = gs1.from_digital_link(identifier)
    else:
        return Keys()
    if key is None or key.kind not in _JOINED:
        return Keys()
    return Keys(gtin=key.gtin, lot=key.lot, serial=key.serial, sscc=key.sscc)


def _pattern(scheme: str, rest: str) -> Keys:
    """`urn:epc:idpat:sgtin:0614141.107346.*` -> the LIKE pattern of the ids it covers, and
    the GTIN when the pattern fixes it."""
    # Up to the first wildcard, its dot kept: 0614141.* must not match 06141412.
    fixed = rest[: rest.index("*")] if "*" in rest else rest
    parts = fixed.split(".")
    found = Keys(pattern=f"urn:epc:id:{scheme}:{_like_escape(fixed)}%")
    if scheme == "sgtin" and len(parts) >= 2 and gs1.digits(parts[0]) and gs1.digits(parts[1]):
        return Keys(gtin=gs1.gtin_of_epc(parts[0], parts[1]), pattern=found.pattern)
    return found


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
