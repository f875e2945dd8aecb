"""The ThingMagic Mercury serial protocol (M5e/M6e/Micro/Nano modules and the readers built
on them): frames, CRC, tag reports. Pure: bytes in, frames and records out.

Frame envelope (all integers big-endian)::

    host -> reader:  FF  len  opcode  data[len]                 crc16
    reader -> host:  FF  len  opcode  status(2)  data[len]      crc16

`len` counts the data bytes only; the CRC covers everything after the FF up to the CRC.

What is implemented:

- the envelope in both directions and the Mercury CRC;
- 0x22 Read Tag ID Multiple in streaming (continuous) mode, the reader's unsolicited tag
  reports: data = option (0x10: metadata flags follow; 0x88 first when multi-select is on),
  search flags (2), metadata flags (2), response type (1: 0x01 tag record, 0x00 end of
  cycle, 0x02 status), then one tag record;
- 0x29 Get Tag ID Buffer: data = metadata flags (2), read options (1), tag count (1), then
  that many tag records;
- a tag record: the metadata fields present in `metadata` flags, in flag-bit order (read
  count 1, RSSI 1 (signed dBm), antenna 1 (TX port high nibble, RX port low nibble),
  frequency 3 (kHz), timestamp 4 (ms), phase 2, protocol 1, embedded data (2-byte bit
  length + data), GPIO 1), then the EPC length in bits (2, counting PC word and tag CRC),
  the PC word (2), the EPC, the tag's CRC (2);
- 0x2F Multi-Protocol Tag Op: the start and stop continuous-read commands.

Sources checked: the ThingMagic MercuryAPI C source (serial_reader_l3.c: `tm_crc` with its
16-entry table, `TMR_SR_parseMetadataFromMessage`, `TMR_TRD_MetadataFlag` values in
tmr_tag_data.h; serial_reader.c: `TMR_SR_hasMoreTags`, `TMR_SR_getNextTag`, which give
the streaming header, response-type byte and the 0x29 layout) and SparkFun's
Simultaneous_RFID_Tag_Reader library (a stripped Mercury API for the M6e Nano), whose
start-continuous-read blob we send and whose captured tag report is a test case here.

Verified: the CRC (against three frames captured from real modules, see the test cases),
the envelope, the streaming tag-report layout with metadata 0x01FF (a captured frame).
Assumed, not verified on hardware: that metadata bits above 0x0100 (Gen2 Q, LF, target,
brand id) are off (their sizes are not in the sources checked, so such frames count as
unusable); that a record without the protocol flag is Gen2 (a PC word precedes the EPC);
that an antenna byte with different TX and RX nibbles (bistatic) is reported by its RX
port; and the data of the reader's acknowledgement of 0x2F (only its first byte, the
option, is read: the API checks nothing else).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntFlag

from protocols.rfid.records import DecoderCounters, TagRecord

SOF = 0xFF
OPCODE_READ_TAG_ID_MULTIPLE = 0x22
OPCODE_GET_TAG_ID_BUFFER = 0x29
OPCODE_MULTI_PROTOCOL_TAG_OP = 0x2F

# What a reader sends on its own or in answer to the commands this driver sends.
STREAMED_OPCODES = frozenset(
    {OPCODE_READ_TAG_ID_MULTIPLE, OPCODE_GET_TAG_ID_BUFFER, OPCODE_MULTI_PROTOCOL_TAG_OP}
)

STATUS_OK = 0x0000
# Sent with opcode 0x22 and no data at the end of each search cycle when nothing was
# read: a keep-alive, not an error.
STATUS_NO_TAGS_FOUND = 0x0400

PROTOCOL_GEN2 = 0x05

# The table of serial_reader_l3.c: the CRC runs nibble by nibble from 0xFFFF. Close to
# CRC-16/CCITT but not equal to any of its usual parameterisations.
_CRC_TABLE = (
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
)  # fmt: skip


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc = (((crc << 4) | (byte >> 4)) ^ _CRC_TABLE[crc >> 12]) & 0xFFFF
        crc = (((crc << 4) | (byte & 0x0F)) ^ _CRC_TABLE[crc >> 12]) & 0xFFFF
    return crc


class Metadata(IntFlag):
    """Which fields precede the EPC in a tag record (TMR_TRD_MetadataFlag)."""

    READ_COUNT = 0x0001
    RSSI = 0x0002
    ANTENNA = 0x0004
    FREQUENCY = 0x0008
    TIMESTAMP = 0x0010
    PHASE = 0x0020
    PROTOCOL = 0x0040
    DATA = 0x0080
    GPIO = 0x0100


# Size of each fixed-size metadata field; DATA is a 2-byte bit length plus the data.
_FIELD_SIZE: dict[Metadata, int] = {
    Metadata.READ_COUNT: 1,
    Metadata.RSSI: 1,
    Metadata.ANTENNA: 1,
    Metadata.FREQUENCY: 3,
    Metadata.TIMESTAMP: 4,
    Metadata.PHASE: 2,
    Metadata.PROTOCOL: 1,
    Metadata.GPIO: 1,
}
_KNOWN_METADATA = 0x01FF

# What the Universal Reader Assistant asks for, and what our start command asks for.
DEFAULT_METADATA = Metadata(0x01FF)

# Streaming header option bits.
_OPTION_METADATA = 0x10
_OPTION_MULTI_SELECT = 0x88
_RESPONSE_TAG = 0x01

# 0x2F data that starts continuous reading of Gen2 tags with every metadata field of
# DEFAULT_METADATA: timeout 0, option 1 (continuous), sub-opcode 0x22, search flags 0,
# protocol Gen2, then the embedded 7-byte 0x22 command (option 0x10, search flags 0x001B,
# timeout 1000 ms, metadata 0x01FF). Taken from a Universal Reader Assistant transport
# log, as published in SparkFun's library.
START_CONTINUOUS_READ_DATA = bytes.fromhex("00000122000005072210001B03E801FF")
STOP_CONTINUOUS_READ_DATA = bytes.fromhex("000002")
CONTINUOUS_READ_STARTED = 0x01
CONTINUOUS_READ_STOPPED = 0x02


class LayoutError(ValueError):
    """A frame that passed its CRC but whose contents do not add up as a tag report."""


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    data: bytes
    status: int | None = None  # reader -> host frames carry a status word; commands do not


def encode_command(opcode: int, data: bytes = b"") -> bytes:
    body = bytes([len(data), opcode]) + data
    return bytes([SOF]) + body + crc16(body).to_bytes(2, "big")


def encode_response(opcode: int, status: int, data: bytes = b"") -> bytes:
    if len(data) > 255:
        raise ValueError(f"a Mercury frame holds at most 255 data bytes, not {len(data)}")
    body = bytes([len(data), opcode]) + status.to_bytes(2, "big") + data
    return bytes([SOF]) + body + crc16(body).to_bytes(2, "big")


def encode(frame: Frame) -> bytes:
    if frame.status is None:
        return encode_command(frame.opcode, frame.data)
    return encode_response(frame.opcode, frame.status, frame.data)


START_CONTINUOUS_READ = encode_command(OPCODE_MULTI_PROTOCOL_TAG_OP, START_CONTINUOUS_READ_DATA)
STOP_CONTINUOUS_READ = encode_command(OPCODE_MULTI_PROTOCOL_TAG_OP, STOP_CONTINUOUS_READ_DATA)


def _antenna_port(byte: int) -> int:
    # TX port in the high nibble, RX port in the low one; a monostatic antenna (the usual
    # gate) has both equal. The RX port is the antenna that heard the tag.
    return byte & 0x0F or byte >> 4


def _parse_record(data: bytes, at: int, metadata: int) -> tuple[TagRecord, int]:
    """One tag record from `data[at:]`; returns it and the index just past it."""
    if metadata & ~_KNOWN_METADATA:
        raise LayoutError(
            f"metadata flags 0x{metadata:04X} include fields this codec does not implement"
        )
    rssi: int | None = None
    antenna = 1
    protocol = PROTOCOL_GEN2
    for flag in Metadata:
        if not metadata & flag:
            continue
        if flag is Metadata.DATA:
            bits = int.from_bytes(data[at : at + 2], "big")
            at += 2 + (bits + 7) // 8
            continue
        field = data[at : at + _FIELD_SIZE[flag]]
        if len(field) < _FIELD_SIZE[flag]:
            raise LayoutError(f"tag record ends inside its {flag.name} field")
        if flag is Metadata.RSSI:
            rssi = int.from_bytes(field, "big", signed=True)
        elif flag is Metadata.ANTENNA:
            antenna = _antenna_port(field[0])
        elif flag is Metadata.PROTOCOL:
            protocol = field[0]
        at += len(field)
    epc_bits = int.from_bytes(data[at : at + 2], "big")
    at += 2
    epc_len = (epc_bits + 7) // 8
    pc: int | None = None
    if protocol == PROTOCOL_GEN2:
        if epc_len < 4:
            raise LayoutError(f"EPC length {epc_bits} bits leaves no room for PC and CRC")
        pc = int.from_bytes(data[at : at + 2], "big")
        at += 2
        epc_len -= 4  # the PC word and the tag's CRC are counted in the length
    epc = data[at : at + epc_len]
    at += epc_len + (2 if protocol == PROTOCOL_GEN2 else 0)
    if at > len(data):
        raise LayoutError(f"tag record runs {at - len(data)} bytes past the frame's data")
    return TagRecord(epc=bytes(epc), antenna=antenna, rssi_dbm=rssi, pc=pc), at


def tag_records(frame: Frame) -> list[TagRecord]:
    """The tag records in a frame from the reader; [] for frames that carry none
    (keep-alives, acknowledgements, end of a search cycle). Raises LayoutError."""
    if frame.status not in (STATUS_OK, None):
        return []
    data = frame.data
    if frame.opcode == OPCODE_READ_TAG_ID_MULTIPLE:
        if len(data) < 6:
            return []  # the end-of-cycle summary of a synchronous read, or a keep-alive
        skip = 1 if data[0] & _OPTION_MULTI_SELECT == _OPTION_MULTI_SELECT else 0
        if len(data) < skip + 6:
            raise LayoutError("multi-select tag report ends inside its header")
        if not data[skip] & _OPTION_METADATA:
            raise LayoutError("streaming tag report without metadata flags")
        metadata = int.from_bytes(data[skip + 3 : skip + 5], "big")
        if data[skip + 5] != _RESPONSE_TAG:
            return []  # end of a search cycle, or a status report
        record, end = _parse_record(data, skip + 6, metadata)
        if end != len(data):
            raise LayoutError(f"{len(data) - end} bytes left after the tag record")
        return [record]
    if frame.opcode == OPCODE_GET_TAG_ID_BUFFER:
        if len(data) < 4:
            raise LayoutError("tag buffer response shorter than its header")
        metadata = int.from_bytes(data[0:2], "big")
        at, records = 4, []
        for _ in range(data[3]):
            record, at = _parse_record(data, at, metadata)
            records.append(record)
        if at != len(data):
            raise LayoutError(f"{len(data) - at} bytes left after {data[3]} tag records")
        return records
    return []


def _record_bytes(
    record: TagRecord,
    metadata: int,
    *,
    read_count: int = 1,
    frequency_khz: int = 915_250,
    timestamp_ms: int = 0,
    tag_crc: int = 0,
) -> bytes:
    out = bytearray()
    for flag in Metadata:
        if not metadata & flag:
            continue
        if flag is Metadata.READ_COUNT:
            out.append(read_count & 0xFF)
        elif flag is Metadata.RSSI:
            out += (record.rssi_dbm or 0).to_bytes(1, "big", signed=True)
        elif flag is Metadata.ANTENNA:
            out.append((record.antenna << 4 | record.antenna) & 0xFF)
        elif flag is Metadata.FREQUENCY:
            out += frequency_khz.to_bytes(3, "big")
        elif flag is Metadata.TIMESTAMP:
            out += timestamp_ms.to_bytes(4, "big")
        elif flag is Metadata.PHASE:
            out += b"\x00\x00"
        elif flag is Metadata.PROTOCOL:
            out.append(PROTOCOL_GEN2)
        elif flag is Metadata.DATA:
            out += b"\x00\x00"
        elif flag is Metadata.GPIO:
            out.append(0x00)
    pc = record.pc if record.pc is not None else (len(record.epc) // 2) << 11
    out += ((len(record.epc) + 4) * 8).to_bytes(2, "big")
    out += pc.to_bytes(2, "big") + record.epc + tag_crc.to_bytes(2, "big")
    return bytes(out)


def encode_tag_report(
    record: TagRecord,
    metadata: int = DEFAULT_METADATA,
    *,
    timestamp_ms: int = 0,
    read_count: int = 1,
) -> bytes:
    """The streaming 0x22 frame a reader sends for one tag read (used by the simulator).
    A PC of None is filled in from the EPC length, as a tag would."""
    header = bytes([_OPTION_METADATA]) + (0x001B).to_bytes(2, "big") + metadata.to_bytes(2, "big")
    body = _record_bytes(record, metadata, timestamp_ms=timestamp_ms, read_count=read_count)
    return encode_response(OPCODE_READ_TAG_ID_MULTIPLE, STATUS_OK, header + b"\x01" + body)


def encode_tag_buffer(records: list[TagRecord], metadata: int = DEFAULT_METADATA) -> bytes:
    """A 0x29 Get Tag ID Buffer response holding `records`."""
    data = metadata.to_bytes(2, "big") + b"\x00" + bytes([len(records)])
    data += b"".join(_record_bytes(r, metadata) for r in records)
    return encode_response(OPCODE_GET_TAG_ID_BUFFER, STATUS_OK, data)


class FrameDecoder:
    """Mercury frames out of a byte stream that arrives in arbitrary chunks.

    Resynchronises by itself: bytes before a frame start (0xFF) are dropped, a frame that
    fails its CRC loses its first byte and the search for the next 0xFF goes on, so a
    damaged or cut-short frame costs itself and nothing after it. An incomplete frame is
    waited for only if its opcode is in `awaited`; one cut short at the end of a burst
    is dropped by `idle()`. Never raises on input.
    `replies=False` decodes what a host sends (no status word), for the simulator.
    """

    # A frame cannot be longer than this: 255 data bytes plus the envelope.
    MAX_FRAME = 255 + 7

    def __init__(self, *, replies: bool = True, awaited: frozenset[int] | None = None) -> None:
        self._overhead = 7 if replies else 5
        # Opcodes worth waiting for when a frame is still incomplete (None: all). Noise
        # often holds an FF followed by a large "length": without this check, good frames
        # behind it would wait until that many bytes have arrived.
        self._awaited = awaited
        self._replies = replies
        self._buffer = bytearray()
        self._hunting = False  # inside a damaged stretch: count it once
        self.counters = DecoderCounters()

    def _discard(self, count: int) -> None:
        del self._buffer[:count]
        self.counters.bytes_discarded += count

    def _bad(self) -> None:
        if not self._hunting:
            self.counters.bad_frames += 1
            self._hunting = True
        self._discard(1)

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        return self._scan(final=False)

    def idle(self) -> list[Frame]:
        """Nothing more is coming for now: an incomplete frame still waiting was cut short."""
        return self._scan(final=True)

    def _scan(self, *, final: bool) -> list[Frame]:
        frames: list[Frame] = []
        buffer = self._buffer
        while buffer:
            start = buffer.find(SOF)
            if start < 0:
                self._discard(len(buffer))
                break
            if start:
                self._discard(start)
            if len(buffer) < 2 or len(buffer) < buffer[1] + self._overhead:
                implausible = (
                    self._awaited is not None and len(buffer) > 2 and buffer[2] not in self._awaited
                )
                if final or implausible:
                    self._bad()
                    continue
                break
            total = buffer[1] + self._overhead
            body = bytes(buffer[1 : total - 2])
            if crc16(body) != int.from_bytes(buffer[total - 2 : total], "big"):
                self._bad()
                continue
            del buffer[:total]
            self._hunting = False
            self.counters.frames += 1
            if self._replies:
                frames.append(Frame(body[1], body[4:], int.from_bytes(body[2:4], "big")))
            else:
                frames.append(Frame(body[1], body[2:]))
        return frames


class MercuryDecoder:
    """Tag records out of the byte stream of a Mercury reader (a `TagDecoder`).

    Frames that carry no tags are not errors; frames from the reader with an error status
    (other than "no tags found") are kept in `errors` (the last 16) for diagnostics.
    """

    def __init__(self) -> None:
        self._frames = FrameDecoder(replies=True, awaited=STREAMED_OPCODES)
        self.counters = self._frames.counters
        self.errors: deque[Frame] = deque(maxlen=16)
        self.acknowledged: deque[Frame] = deque(maxlen=16)  # 0x2F replies, in order

    def feed(self, chunk: bytes) -> list[TagRecord]:
        return self._records(self._frames.feed(chunk))

    def idle(self) -> list[TagRecord]:
        return self._records(self._frames.idle())

    def _records(self, frames: list[Frame]) -> list[TagRecord]:
        out: list[TagRecord] = []
        for frame in frames:
            if frame.opcode == OPCODE_MULTI_PROTOCOL_TAG_OP:
                self.acknowledged.append(frame)
            if frame.status not in (STATUS_OK, STATUS_NO_TAGS_FOUND):
                self.errors.append(frame)
                self.counters.unusable_frames += 1
                continue
            try:
                records = tag_records(frame)
            except LayoutError:
                self.counters.unusable_frames += 1
                continue
            self.counters.records += len(records)
            out.extend(records)
        return out
