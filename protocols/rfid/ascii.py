"""One tag report per text line, as gates and simple readers send it. Pure.

A line ends with CR, LF or CR LF; empty lines are ignored. Two layouts, told apart by
whether the line has a key separator (`:` or `=`):

- key/value: fields separated by `,` or `;`, each `KEY:VALUE` or `KEY=VALUE`, keys in any
  case, spaces around separators allowed, e.g. `EPC:3074257BF7194E4000001A85,ANT:2,RSSI:-57`.
  Keys: EPC (required), ANT or ANTENNA, RSSI, PC; any other key (TIME, COUNT, ...) is
  ignored, so readers that add fields still work.
- positional: `EPC[,ANTENNA[,RSSI]]`, separated by `,`, `;`, tab or spaces; a bare hex
  EPC alone on a line is the simplest case.

Values: EPC is hex, whole 16-bit words (4 to 124 hex digits; Gen2 EPCs are word-aligned);
antenna 1..64 (a line without one is antenna 1); RSSI a number in dBm, -120..0; PC four
hex digits. A line that breaks any rule is counted as bad and skipped, never guessed at.
"""

from __future__ import annotations

import re

from protocols.rfid.records import DecoderCounters, TagRecord

# Longer than any valid line (a 124-digit EPC with every key): more is noise or a wrong
# baud rate, and is dropped up to the next line end.
MAX_LINE = 256

_KEYS: dict[str, str] = {
    "EPC": "epc",
    "ANT": "antenna",
    "ANTENNA": "antenna",
    "RSSI": "rssi",
    "PC": "pc",
}
_HEX_EPC = re.compile(r"^(?:[0-9A-Fa-f]{4}){1,31}$")
_FIELD_SPLIT = re.compile(r"\s*[,;]\s*")
_POSITIONAL_SPLIT = re.compile(r"\s*[,;\t]\s*|\s+")
_LINE_END = re.compile(rb"[\r\n]")


class LineError(ValueError):
    """A line that is not a tag report; the message says why."""


def parse_line(line: str) -> TagRecord:
    text = line.strip()
    if not text:
        raise LineError("empty line")
    fields: dict[str, str] = {}
    if ":" in text or "=" in text:
        for part in _FIELD_SPLIT.split(text):
            key, sep, value = part.replace("=", ":", 1).partition(":")
            if not sep:
                raise LineError(f"field {part!r} has no KEY:VALUE form")
            name = _KEYS.get(key.strip().upper())
            if name is not None:
                fields[name] = value.strip()
        if "epc" not in fields:
            raise LineError("no EPC field")
    else:
        values = _POSITIONAL_SPLIT.split(text)
        if len(values) > 3:
            raise LineError(f"{len(values)} positional fields; at most EPC, antenna, RSSI")
        fields = dict(zip(("epc", "antenna", "rssi"), values, strict=False))
    epc = fields["epc"]
    if not _HEX_EPC.match(epc):
        raise LineError(f"EPC {epc!r} is not 4..124 hex digits in whole 16-bit words")
    antenna = 1
    if "antenna" in fields:
        try:
            antenna = int(fields["antenna"])
        except ValueError as err:
            raise LineError(f"antenna {fields['antenna']!r} is not a number") from err
        if not 1 <= antenna <= 64:
            raise LineError(f"antenna {antenna} is outside 1..64")
    rssi: int | None = None
    if "rssi" in fields:
        try:
            rssi = round(float(fields["rssi"]))
        except (ValueError, OverflowError) as err:  # OverflowError: inf, 1e999
            raise LineError(f"RSSI {fields['rssi']!r} is not a number") from err
        if not -120 <= rssi <= 0:
            raise LineError(f"RSSI {rssi} dBm is outside -120..0")
    pc: int | None = None
    if "pc" in fields:
        if not re.fullmatch(r"[0-9A-Fa-f]{4}", fields["pc"]):
            raise LineError(f"PC {fields['pc']!r} is not four hex digits")
        pc = int(fields["pc"], 16)
    return TagRecord(epc=bytes.fromhex(epc), antenna=antenna, rssi_dbm=rssi, pc=pc)


def format_line(record: TagRecord, style: str = "keyvalue", end: bytes = b"\r\n") -> bytes:
    """The line a reader sends for `record` (used by the simulator); style is keyvalue,
    positional or bare (the EPC alone)."""
    if style == "bare":
        text = record.epc_hex
    elif style == "positional":
        text = f"{record.epc_hex},{record.antenna},{record.rssi_dbm}"
    elif style == "keyvalue":
        text = f"EPC:{record.epc_hex},ANT:{record.antenna}"
        if record.rssi_dbm is not None:
            text += f",RSSI:{record.rssi_dbm}"
        if record.pc is not None:
            text += f",PC:{record.pc:04X}"
    else:
        raise ValueError(f"unknown line style {style!r}: use keyvalue, positional or bare")
    return text.encode("ascii") + end


class AsciiDecoder:
    """Tag records out of a stream of text lines arriving in arbitrary chunks (a
    `TagDecoder`). Never raises on input: bad lines are counted and skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overlong = False  # dropping the rest of a line that went past MAX_LINE
        self.counters = DecoderCounters()
        self.last_error: str | None = None  # why the last bad line was bad

    def _bad(self, length: int, reason: str) -> None:
        self.counters.bad_frames += 1
        self.counters.bytes_discarded += length
        self.last_error = reason

    def feed(self, chunk: bytes) -> list[TagRecord]:
        self._buffer += chunk
        out: list[TagRecord] = []
        while True:
            end = _LINE_END.search(self._buffer)
            if end is None:
                if len(self._buffer) > MAX_LINE:
                    if not self._overlong:
                        self._bad(0, f"line longer than {MAX_LINE} characters")
                    self.counters.bytes_discarded += len(self._buffer)
                    self._buffer.clear()
                    self._overlong = True
                break
            raw = bytes(self._buffer[: end.start()])
            del self._buffer[: end.end()]
            if self._overlong:
                self._overlong = False
                self.counters.bytes_discarded += len(raw) + 1
                continue
            record = self._line(raw)
            if record is not None:
                out.append(record)
        return out

    def idle(self) -> list[TagRecord]:
        # Readers end every line; a fragment left when the line goes quiet was cut short,
        # and glued to the next line it could pass for a different EPC.
        if self._buffer and not self._overlong:
            self._bad(len(self._buffer), "line cut short (no line end before the line went quiet)")
        elif self._buffer:
            self.counters.bytes_discarded += len(self._buffer)
        self._buffer.clear()
        self._overlong = False
        return []

    def _line(self, raw: bytes) -> TagRecord | None:
        if not raw.strip():
            return None
        if len(raw) > MAX_LINE:
            self._bad(len(raw) + 1, f"line longer than {MAX_LINE} characters")
            return None
        try:
            record = parse_line(raw.decode("ascii"))
        except UnicodeDecodeError:
            self._bad(len(raw) + 1, "line holds non-ASCII bytes (wrong baud rate or framing?)")
            return None
        except LineError as err:
            self._bad(len(raw) + 1, str(err))
            return None
        self.counters.frames += 1
        self.counters.records += 1
        return record
