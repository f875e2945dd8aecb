"""GS1 keys and the forms people and systems write them in (pure: no I/O, no clock).

One `Key` whatever the form it came in:

- an EPC pure identity URN (`urn:epc:id:sgtin:0614141.812345.6789`, `sscc`, `sgln`,
  `pgln`, `grai`) or EPC class URN (`urn:epc:class:lgtin:0614141.812345.LOT7`), Tag Data
  Standard section 6;
- a GS1 Digital Link URI (`https://id.gs1.org/01/09506000134352/10/LOT7`);
- a GS1 element string, bracketed (`(01)09506000134352(10)LOT7`) or with FNC1 as the ASCII
  GS character (read by `elements.py`);
- a bare key: 13 digits a GLN, 14 a GTIN, 18 an SSCC.

The Digital Link rule, one for every caller: the scheme and host are optional. A Digital
Link is `[http(s)://host][/any path]/{key AI}/{key}[/{qualifier AI}/{value}...][/][?...][#...]`,
and without a host it must start with `/` or with the key AI (`01/.../10/...` as a person
types it). The qualifiers must be the key's own, in the standard's order (01: 22, 10, 21,
235; 414: 254); anything else after the key means the text is not a Digital Link of it.
Values are percent-decoded. Whichever resolver host a partner prints, the key is the same.

Parsing reads structure and lengths; it does not judge check digits (a partner's EPC names
what it names): `valid` does, for the callers that take keys from people.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote

from biip.gs1_prefixes import GS1CompanyPrefix

from protocols.gs1.elements import GS, NotGs1Data, read_bracketed, read_element_string

Kind = Literal["gtin", "lgtin", "sgtin", "sscc", "gln", "sgln", "pgln", "grai"]


def check_digit(body: str) -> str:
    """The GS1 mod-10 check digit of `body` (a GTIN, GLN, SSCC or GRAI without its last
    digit)."""
    # Weights 3, 1, 3, ... from the right; slices keep it cheap (10,000 EPCs in a capture).
    total = 3 * sum(map(int, body[::-1][::2])) + sum(map(int, body[::-1][1::2]))
    return str(-total % 10)


def digits(text: str) -> bool:
    """Whether `text` is ASCII digits only: str.isdigit also takes `³` and `٣`, which
    no GS1 key holds and int() may refuse."""
    return text.isascii() and text.isdigit()


def with_check_digit(body: str) -> str:
    return body + check_digit(body)


def valid(key: str) -> bool:
    """Whether `key` is all digits and ends in its check digit."""
    return len(key) > 1 and digits(key) and key[-1] == check_digit(key[:-1])


@dataclass(frozen=True, slots=True)
class Key:
    """A GS1 key with what qualifies it. `gtin`, `sscc` and `gln` are full keys with their
    check digit; `grai` is AI 8003's value (`0` + GRAI-13 + optional serial)."""

    kind: Kind
    gtin: str | None = None
    lot: str | None = None
    serial: str | None = None
    sscc: str | None = None
    gln: str | None = None
    extension: str | None = None  # SGLN: AI 254; None for extension 0 (the whole GLN)
    grai: str | None = None


def _extension(value: str | None) -> str | None:
    return None if value in (None, "", "0") else value


# ---- EPC URNs (Tag Data Standard 6.3, 6.4, 7) ------------------------------------------

# Per scheme: company prefix, the second field (item or location reference, serial
# reference), and the rest (serial, lot, extension) as the URN writes them.
_URNS = {
    "sgtin": re.compile(r"^urn:epc:id:sgtin:(\d+)\.(\d+)\.([^:]+)$", re.ASCII),
    "lgtin": re.compile(r"^urn:epc:class:lgtin:(\d+)\.(\d+)\.([^:]+)$", re.ASCII),
    "sscc": re.compile(r"^urn:epc:id:sscc:(\d+)\.(\d+)()$", re.ASCII),
    # The SGLN's extension is optional here: partners write urn:epc:id:sgln:P.L too.
    "sgln": re.compile(r"^urn:epc:id:sgln:(\d+)\.(\d*)(?:\.([^:.]*))?$", re.ASCII),
    "pgln": re.compile(r"^urn:epc:id:pgln:(\d+)\.(\d*)()$", re.ASCII),
    "grai": re.compile(r"^urn:epc:id:grai:(\d+)\.(\d*)\.([^:]+)$", re.ASCII),
}
_SCHEME = re.compile(r"^urn:epc:(?:id|class):([a-z]+):", re.ASCII)


def gtin_of_epc(company_prefix: str, indicator_item: str) -> str | None:
    """GTIN-14 of an EPC's company prefix and indicator digit + item reference; None when
    the two are not 13 digits together (a partner's EPC is not trusted to be well formed)."""
    if len(company_prefix) + len(indicator_item) != 13 or not indicator_item:
        return None
    return with_check_digit(indicator_item[0] + company_prefix + indicator_item[1:])


def from_urn(text: str) -> Key | None:
    """The key of an EPC pure identity URN or LGTIN class URN; None for anything else."""
    text = text.strip()
    kind = m[1] if (m := _SCHEME.match(text)) else ""
    found = _URNS[kind].match(text) if kind in _URNS else None
    if found is None:
        return None
    company, reference, rest = found.groups()
    if kind in ("sgtin", "lgtin"):
        gtin, value = gtin_of_epc(company, reference), unquote(rest)
        if not gtin or not value:
            return None
        if kind == "sgtin":
            return Key("sgtin", gtin=gtin, serial=value)
        return Key("lgtin", gtin=gtin, lot=value)
    if kind == "sscc":
        body = reference[:1] + company + reference[1:]
        return Key("sscc", sscc=with_check_digit(body)) if len(body) == 17 else None
    if len(company + reference) != 12:  # sgln, pgln, grai: a GLN's or GRAI's 12 digits
        return None
    body = with_check_digit(company + reference)
    if kind == "pgln":
        return Key("pgln", gln=body)
    if kind == "sgln":
        return Key("sgln", gln=body, extension=_extension(unquote(rest) if rest else None))
    serial = unquote(rest)
    return Key("grai", grai="0" + body + serial, serial=serial or None)


def urn(key: Key, company_prefix_length: int) -> str:
    """The EPC URN of `key` under a company prefix of that many digits (6 to 12: the key
    itself does not tell where the prefix ends)."""
    if not 6 <= company_prefix_length <= 12:
        raise ValueError(f"a GS1 company prefix has 6 to 12 digits, not {company_prefix_length}")
    n = company_prefix_length
    if key.gtin and key.kind in ("sgtin", "lgtin"):
        prefix, item = key.gtin[1 : 1 + n], key.gtin[0] + key.gtin[1 + n : 13]
        if key.kind == "sgtin":
            return f"urn:epc:id:sgtin:{prefix}.{item}.{_escape(key.serial or '')}"
        return f"urn:epc:class:lgtin:{prefix}.{item}.{_escape(key.lot or '')}"
    if key.sscc and key.kind == "sscc":
        return f"urn:epc:id:sscc:{key.sscc[1 : 1 + n]}.{key.sscc[0]}{key.sscc[1 + n : 17]}"
    if key.gln and key.kind in ("sgln", "gln", "pgln"):
        prefix, reference = key.gln[:n], key.gln[n:12]
        if key.kind == "pgln":
            return f"urn:epc:id:pgln:{prefix}.{reference}"
        return f"urn:epc:id:sgln:{prefix}.{reference}.{_escape(key.extension or '0')}"
    if key.grai and key.kind == "grai":
        grai = key.grai[1:14]
        return f"urn:epc:id:grai:{grai[:n]}.{grai[n:12]}.{_escape(key.grai[14:])}"
    raise ValueError(f"a {key.kind} key has no EPC URN")


def _escape(value: str) -> str:
    # TDS 6.3: the characters of AI 82 that a URN cannot carry as themselves.
    return quote(value, safe="!'()*+,-.:;=_")


# ---- GS1 Digital Link ------------------------------------------------------------------

# Each key AI: its value's pattern and its qualifiers in the standard's order.
DIGITAL_LINK_KEYS: dict[str, tuple[re.Pattern[str], tuple[str, ...]]] = {
    "01": (re.compile(r"\d{14}", re.ASCII), ("22", "10", "21", "235")),
    "00": (re.compile(r"\d{18}", re.ASCII), ()),
    "414": (re.compile(r"\d{13}", re.ASCII), ("254",)),
    "417": (re.compile(r"\d{13}", re.ASCII), ()),
    "8003": (re.compile(r"0\d{13}[!-~]{0,16}", re.ASCII), ()),
}
_HOST = re.compile(r"^https?://[^/?#]+", re.IGNORECASE)


def from_digital_link(text: str) -> Key | None:
    """The key of a GS1 Digital Link URI, with or without its host (see the module's
    rule); None for anything else."""
    text = text.strip()
    path = re.split(r"[?#]", text, maxsplit=1)[0]
    if host := _HOST.match(path):
        path = path[host.end() :]
    elif not (path.startswith("/") or path.split("/", 1)[0] in DIGITAL_LINK_KEYS):
        return None
    segments = path.strip("/").split("/")
    # The key is the last key AI whose value fits and whose qualifiers follow it in order:
    # a resolver may put any path in front (https://example.com/products/01/...).
    for at in range(len(segments) - 2, -1, -1):
        ai = segments[at]
        if ai not in DIGITAL_LINK_KEYS or not DIGITAL_LINK_KEYS[ai][0].fullmatch(segments[at + 1]):
            continue
        qualifiers = _qualifiers(segments[at + 2 :], DIGITAL_LINK_KEYS[ai][1])
        if qualifiers is None:
            return None
        return _key_of(ai, unquote(segments[at + 1]), qualifiers)
    return None


def _qualifiers(segments: list[str], allowed: tuple[str, ...]) -> dict[str, str] | None:
    if len(segments) % 2 or any(not s for s in segments):
        return None
    found: dict[str, str] = {}
    order = -1
    for ai, value in zip(segments[::2], segments[1::2], strict=True):
        if ai not in allowed or allowed.index(ai) <= order:
            return None
        order = allowed.index(ai)
        found[ai] = unquote(value)
    return found


def _key_of(ai: str, value: str, qualifiers: dict[str, str]) -> Key:
    if ai == "01":
        serial, lot = qualifiers.get("21"), qualifiers.get("10")
        kind: Kind = "sgtin" if serial else "lgtin" if lot else "gtin"
        return Key(kind, gtin=value, lot=lot, serial=serial)
    if ai == "00":
        return Key("sscc", sscc=value)
    if ai == "414":
        extension = _extension(qualifiers.get("254"))
        return Key("sgln" if "254" in qualifiers else "gln", gln=value, extension=extension)
    if ai == "417":
        return Key("pgln", gln=value)
    return Key("grai", grai=value, serial=value[14:] or None)


def _segment(value: str) -> str:
    return quote(value, safe="")


def digital_link(key: Key, host: str = "https://id.gs1.org") -> str:
    """The Digital Link URI of `key` on `host` (empty for the bare path)."""
    q = _segment
    if key.sscc and key.kind == "sscc":  # a pallet's label may name its content's GTIN too
        path = f"/00/{key.sscc}"
    elif key.gtin:
        path = f"/01/{key.gtin}"
        path += f"/10/{q(key.lot)}" if key.lot else ""
        path += f"/21/{q(key.serial)}" if key.serial else ""
    elif key.gln and key.kind == "pgln":
        path = f"/417/{key.gln}"
    elif key.gln:
        path = f"/414/{key.gln}" + (f"/254/{q(key.extension)}" if key.extension else "")
    elif key.grai:
        path = f"/8003/{q(key.grai)}"
    else:
        raise ValueError(f"a {key.kind} key without its value has no Digital Link")
    return host.rstrip("/") + path


# ---- element strings -------------------------------------------------------------------


def from_element_string(text: str) -> Key | None:
    """The key of a GS1 element string, bracketed or with GS separators; None when it is
    none or names no key this module knows."""
    text = text.strip()
    try:
        elements = read_bracketed(text) if text.startswith("(") else read_element_string(text)
    except NotGs1Data:
        return None
    ais = {e.ai.ai: e.value for e in elements}
    # A label may carry several keys (a pallet's SSCC beside its content's GTIN and lot):
    # the Key keeps them all, its kind names the first of SSCC, GTIN, GLN, PGLN, GRAI.
    lot, serial = ais.get("10"), ais.get("21")
    kind: Kind
    if "00" in ais:
        kind = "sscc"
    elif "01" in ais:
        kind = "sgtin" if serial else "lgtin" if lot else "gtin"
    elif "414" in ais:
        kind = "sgln" if "254" in ais else "gln"
    elif "417" in ais:
        kind = "pgln"
    elif "8003" in ais:
        kind, serial = "grai", ais["8003"][14:] or None
    else:
        return None
    return Key(
        kind,
        gtin=ais.get("01"),
        lot=lot,
        serial=serial,
        sscc=ais.get("00"),
        gln=ais.get("414") or ais.get("417"),
        extension=_extension(ais.get("254")),
        grai=ais.get("8003"),
    )


def element_string(key: Key) -> str:
    """The bracketed (human-readable) element string of `key`."""
    if key.kind == "pgln":
        fields = [("417", key.gln)]
    elif key.kind == "grai":
        fields = [("8003", key.grai)]  # its serial is part of the value
    else:
        fields = [
            ("00", key.sscc),
            ("01", key.gtin),
            ("10", key.lot),
            ("21", key.serial),
            ("414", key.gln),
            ("254", key.extension),
            ("8003", key.grai),
        ]
    out = "".join(f"({ai}){value}" for ai, value in fields if value)
    if not out:
        raise ValueError(f"a {key.kind} key without its value has no element string")
    return out


# ---- any form --------------------------------------------------------------------------

_BARE = {13: "gln", 14: "gtin", 18: "sscc"}


def parse(text: str) -> Key | None:
    """The key `text` names in any of the forms above; None when it names none."""
    text = text.strip()
    if text.startswith("urn:"):
        return from_urn(text)
    if digits(text) and len(text) in _BARE:
        kind = _BARE[len(text)]
        return Key(kind, **{kind: text})  # type: ignore[arg-type]
    if text.startswith("(") or GS in text:
        return from_element_string(text)
    return from_digital_link(text)


def company_prefix(text: str) -> str | None:
    """The GS1 company prefix of the key `text` names, in any form: as an EPC URN writes
    it (the URN says where the prefix ends), else by GS1's table of prefix lengths (biip's);
    None when `text` names no key or the table does not know the prefix."""
    text = text.strip()
    if text.startswith("urn:"):
        written = _URNS[m[1]].match(text) if (m := _SCHEME.match(text)) and m[1] in _URNS else None
        return written[1] if written and from_urn(text) else None
    key = parse(text)
    digits_from_prefix = _FROM_PREFIX[key.kind](key) if key else None
    found = GS1CompanyPrefix.extract(digits_from_prefix) if digits_from_prefix else None
    return found.value if found else None


# Each kind's digits from where its company prefix starts: after a GTIN's indicator digit,
# an SSCC's extension digit, a GRAI's leading 0.
_FROM_PREFIX: dict[Kind, Callable[[Key], str | None]] = {
    "gtin": lambda k: k.gtin and k.gtin[1:],
    "lgtin": lambda k: k.gtin and k.gtin[1:],
    "sgtin": lambda k: k.gtin and k.gtin[1:],
    "sscc": lambda k: k.sscc and k.sscc[1:],
    "gln": lambda k: k.gln,
    "sgln": lambda k: k.gln,
    "pgln": lambda k: k.gln,
    "grai": lambda k: k.grai and k.grai[1:14],
}
