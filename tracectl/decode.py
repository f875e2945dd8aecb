"""`tracectl decode`: what a tag or a label says, for a technician at the dock or line."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from typing import Any

from protocols.rfid.epc import decode_epc as decode_epc_hex
from protocols.scanner.gs1 import parse_scan, split_symbology


def _plain(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    return value


def _show(fields: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(fields, indent=2, default=_plain))
        return
    for key, value in fields.items():
        if value in (None, {}, []):
            continue
        print(f"{key:>16}: {_plain(value)}")


def typed_label(text: str) -> str:
    """The label as a scanner would send it: a shell cannot type the GS separator, so the
    usual stand-ins for it are accepted."""
    for stand_in in ("<GS>", "\\x1d", "\\u001d"):
        text = text.replace(stand_in, "\x1d")
    return text


def decode_barcode(text: str, as_json: bool) -> int:
    """Print what a scanned label carries. Exit code 0 only for well-formed GS1 data; 1 for
    a misread (GS1 data that does not parse, or whose check digit or date fails) and for
    plain text, which is no GS1 data at all; `outcome` and `reason` say which and why."""
    symbology, rest = split_symbology(typed_label(text))
    scan = parse_scan(rest, symbology)
    fields = dataclasses.asdict(scan)
    fields["symbology"] = symbology
    if scan.is_gs1:
        fields["outcome"], fields["reason"] = "gs1", None
    elif scan.misread is not None:
        fields["outcome"], fields["reason"] = "misread", scan.misread
    else:
        fields["outcome"] = "plain"
        fields["reason"] = (
            "not GS1 data: plain text, which scan rules match by pattern only; if the label "
            "is a GS1 label, switch the scanner's AIM symbology identifiers on (or type its "
            "bracketed form, (01)...(10)...)"
        )
    _show(fields, as_json)
    return 0 if scan.is_gs1 else 1


def decode_epc(hex_text: str, as_json: bool) -> int:
    """Print what an RFID tag's EPC says; exit code 1 when it decodes to nothing."""
    decoded = decode_epc_hex(hex_text.strip().removeprefix("0x").replace(" ", ""))
    _show(dataclasses.asdict(decoded), as_json)
    return 0 if decoded.uri is not None else 1
