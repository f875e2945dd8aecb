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


def decode_barcode(text: str, as_json: bool) -> int:
    """Print what a scanned label carries; exit code 1 when its check digits are wrong."""
    # A shell cannot type the GS separator: accept the usual stand-ins for it.
    for stand_in in ("<GS>", "\\x1d", "\\u001d"):
        text = text.replace(stand_in, "\x1d")
    symbology, rest = split_symbology(text)
    scan = parse_scan(rest, symbology)
    fields = {k: v for k, v in dataclasses.asdict(scan).items()}
    fields["symbology"] = symbology
    _show(fields, as_json)
    return 0 if scan.check_digits_ok and not scan.errors else 1


def decode_epc(hex_text: str, as_json: bool) -> int:
    """Print what an RFID tag's EPC says; exit code 1 when it decodes to nothing."""
    decoded = decode_epc_hex(hex_text.strip().removeprefix("0x").replace(" ", ""))
    _show(dataclasses.asdict(decoded), as_json)
    return 0 if decoded.uri is not None else 1
