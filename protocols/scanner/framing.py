"""Bytes from a scanner -> one text per scan (pure: no I/O, no clock).

A scanner ends each scan with a terminator (its "suffix"): CR, LF or CRLF. Bytes arrive in
chunks that do not respect scans, so `ScanFramer` keeps the unfinished part between calls.

- CRLF is accepted whatever the profile says: with CR configured the LF that follows is
  dropped; with LF or CRLF configured a CR before the LF is dropped. Other CRs and LFs
  inside a scan stay (a 2D code may carry line breaks).
- Bytes are read as Latin-1, which maps each byte to one character and keeps GS (0x1D),
  the FNC1 separator of GS1 data.
- Garbage is counted and dropped, never raised: a line holding control characters (line
  noise, a scanner's beep or bell codes; GS excepted) and a line longer than `max_length`
  (a missing terminator, or noise with no end). NUL bytes are dropped silently: a line
  break or a plugged-in adapter reads as NUL, and no barcode carries one.
- Empty lines (a second terminator, an Enter key on a wedge) are dropped.
- An AIM symbology identifier in front (`]C1`, `]d2`, ...) is split off into its own field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from protocols.scanner.gs1 import split_symbology

Terminator = Literal["\r", "\n", "\r\n"]

# Longer than any barcode (a QR code holds at most 4,296 characters): only a line with no
# terminator gets here.
MAX_SCAN_LENGTH = 8192

# C0 controls except GS, CR and LF; DEL and the C1 controls: no barcode sends them, noise
# does.
_GARBAGE = re.compile(r"[\x01-\x09\x0b\x0c\x0e-\x1c\x1e\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class FramedScan:
    text: str  # the scan, terminator and symbology identifier removed
    symbology: str | None  # e.g. "]C1", when the scanner sends AIM identifiers


class ScanFramer:
    """Feed it bytes as they come; it returns the scans they complete."""

    def __init__(self, terminator: Terminator = "\r", max_length: int = MAX_SCAN_LENGTH) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        self.terminator = terminator
        self.max_length = max_length
        self.garbage = 0  # lines dropped: noise or over-long
        self.scans = 0  # scans returned
        self._end = b"\r" if terminator == "\r" else b"\n"
        self._buffer = bytearray()
        self._overlong = False  # dropping the rest of an over-long line up to its terminator

    def feed(self, data: bytes) -> list[FramedScan]:
        scans: list[FramedScan] = []
        data = data.replace(b"\x00", b"")
        while data:
            end = data.find(self._end)
            if end < 0:
                self._keep(data)
                break
            self._keep(data[:end])
            data = data[end + 1 :]
            scan = self._line_ended()
            if scan is not None:
                scans.append(scan)
        return scans

    def flush(self) -> list[FramedScan]:
        """The unterminated rest as a scan: at the end of input that will not go on."""
        scan = self._line_ended()
        return [scan] if scan is not None else []

    def _keep(self, part: bytes) -> None:
        if self._overlong:
            return
        self._buffer += part
        if len(self._buffer) > self.max_length:
            self._buffer.clear()
            self._overlong = True

    def _line_ended(self) -> FramedScan | None:
        if self._overlong:
            self._overlong = False
            self.garbage += 1
            return None
        line = bytes(self._buffer)
        self._buffer.clear()
        # The other half of a CRLF: after the CR that ended the line before (CR configured),
        # or before the LF that ends this one (LF or CRLF configured).
        line = line.strip(b"\n") if self._end == b"\r" else line.removesuffix(b"\r")
        if not line:
            return None
        text = line.decode("latin-1")
        if _GARBAGE.search(text):
            self.garbage += 1
            return None
        symbology, text = split_symbology(text)
        if not text:
            self.garbage += 1  # a symbology identifier and nothing else: a broken read
            return None
        self.scans += 1
        return FramedScan(text, symbology)
