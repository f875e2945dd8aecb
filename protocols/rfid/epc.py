"""EPC binary -> GS1 identities, by the EPC Tag Data Standard (via the `epcpy` library).

Every tag is kept: one that decodes to no EPC (an unprogrammed tag, a tag holding
non-EPC data, a header or partition the standard does not define) comes back with
`uri=None`, its raw hex and a `reason`, so a dock-door read is never silently lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from epcpy import ConvertException, hex_to_tag_encodable
from epcpy.epc_schemes.grai import GRAI
from epcpy.epc_schemes.sgln import SGLN
from epcpy.epc_schemes.sgtin import SGTIN
from epcpy.epc_schemes.sscc import SSCC

# EPC binary headers (TDS table 14-1) -> the encoding scheme's name, as tag URIs spell it.
HEADERS: dict[int, str] = {
    0x2C: "gdti-96",
    0x2D: "gsrn-96",
    0x2E: "gsrnp-96",
    0x2F: "usdod-96",
    0x30: "sgtin-96",
    0x31: "sscc-96",
    0x32: "sgln-96",
    0x33: "grai-96",
    0x34: "giai-96",
    0x35: "gid-96",
    0x36: "sgtin-198",
    0x37: "grai-170",
    0x38: "giai-202",
    0x39: "sgln-195",
    0x3A: "gdti-113",
    0x3B: "adi-var",
    0x3C: "cpi-96",
    0x3D: "cpi-var",
    0x3E: "gdti-174",
    0x3F: "sgcn-96",
}
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_ELEMENT = re.compile(r"\((\d{2,4})\)([^(]+)")


@dataclass(frozen=True, slots=True)
class DecodedEpc:
    hex: str  # the EPC as read, upper-case hex
    scheme: str | None  # the binary encoding, e.g. "sgtin-96"; None if the header is unknown
    uri: str | None  # pure identity, e.g. urn:epc:id:sgtin:0614141.812345.6789
    gtin: str | None = None  # SGTIN: GTIN-14 with its check digit
    serial: str | None = None  # SGTIN / GRAI serial
    sscc: str | None = None  # SSCC-18 with its check digit
    gln: str | None = None  # SGLN: GLN-13 with its check digit
    gln_extension: str | None = None  # SGLN: AI 254; None when the extension is 0 (none)
    grai: str | None = None  # GRAI as AI 8003 holds it: 0 + GRAI-13 (with check digit) + serial
    # The EPC class of the product (EPCIS quantity/class level), e.g.
    # urn:epc:idpat:sgtin:0614141.812345.*; the lot itself is not on an SGTIN-96 tag.
    lot_class_hint: str | None = None
    reason: str | None = None  # why uri is None (or what is odd about the tag)


def decode_epc(epc_hex: str) -> DecodedEpc:
    """Decode a hex EPC; never raises."""
    text = epc_hex.strip().upper()
    if not text or not _HEX.match(text):
        return DecodedEpc(text, None, None, reason=f"not hexadecimal: {epc_hex!r}")
    if len(text) % 2:
        return DecodedEpc(text, None, None, reason=f"odd number of hex digits ({len(text)})")
    header = int(text[:2], 16)
    scheme = HEADERS.get(header)
    if scheme is None:
        why = (
            "header 0x00: the tag holds no EPC (unprogrammed, or raw data)"
            if header == 0
            else f"header 0x{header:02X} is not an EPC binary header of the Tag Data Standard "
            "(a tag with user or vendor data, or a non-GS1 numbering)"
        )
        return DecodedEpc(text, None, None, reason=why)
    try:
        return _identities(text, scheme, hex_to_tag_encodable(text))
    except (ConvertException, ValueError) as err:
        # epcpy's messages name the field ("Invalid partition header 111", "Invalid
        # binary size, expected (>=): 96 actual: 44").
        message = getattr(err, "message", None) or str(err)
        return DecodedEpc(text, scheme, None, reason=f"not a valid {scheme}: {message}")
    except Exception as err:
        # Arbitrary bytes reach a third-party parser here; whatever it trips on, the read
        # is kept rather than lost.
        return DecodedEpc(text, scheme, None, reason=f"epcpy could not decode it: {err!r}")


def _identities(text: str, scheme: str, tag: object) -> DecodedEpc:
    uri: str = tag.epc_uri  # type: ignore[attr-defined]
    # The GS1 element string is epcpy's public way to the keys: "(01)80614141123458(21)6789".
    ais: dict[str, str] = {}
    if isinstance(tag, SGTIN | SSCC | SGLN | GRAI):
        ais = dict(_ELEMENT.findall(tag.gs1_element_string()))
    if isinstance(tag, SGTIN):
        company, item = uri.rsplit(":", 1)[1].split(".")[:2]
        return DecodedEpc(
            text,
            scheme,
            uri,
            gtin=ais["01"],
            serial=ais["21"],
            lot_class_hint=f"urn:epc:idpat:sgtin:{company}.{item}.*",
        )
    if isinstance(tag, SSCC):
        return DecodedEpc(text, scheme, uri, sscc=ais["00"])
    if isinstance(tag, SGLN):
        extension = ais.get("254")
        return DecodedEpc(
            text,
            scheme,
            uri,
            gln=ais["414"],
            gln_extension=None if extension in (None, "0") else extension,
        )
    if isinstance(tag, GRAI):
        return DecodedEpc(text, scheme, uri, grai=ais["8003"], serial=ais["8003"][14:])
    return DecodedEpc(text, scheme, uri)
