"""RFID stream decoders and the EPC decoder against hostile bytes: random bytes, good frames
damaged in transit, CRC-valid frames with nonsense inside, all in chunks that respect
nothing. No input raises; a good frame after any garbage is still decoded (the decoders
resynchronise); counters only grow."""

from __future__ import annotations

import contextlib
import dataclasses
import io

from hypothesis import assume, given
from hypothesis import strategies as st

from protocols.rfid import ascii, mercury
from protocols.rfid.epc import HEADERS, DecodedEpc, decode_epc
from protocols.rfid.records import DecoderCounters, TagRecord
from tests.hostile_input import chunked, damaged
from tracectl.decode import decode_epc as tracectl_decode_epc

RECORDS = st.builds(
    TagRecord,
    epc=st.binary(min_size=2, max_size=62).filter(lambda b: len(b) % 2 == 0),
    antenna=st.integers(1, 15),
    rssi_dbm=st.integers(-120, 0),
)
GOOD = TagRecord(epc=bytes.fromhex("3074257BF7194E4000001A85"), antenna=2, rssi_dbm=-57)
CUTS = st.lists(st.integers(0, 10_000), max_size=8)


def seen(record: TagRecord, records: list[TagRecord]) -> bool:
    return any((r.epc, r.antenna, r.rssi_dbm) == (record.epc, 2, -57) for r in records)


def counters_sane(counters: DecoderCounters) -> None:
    assert min(dataclasses.astuple(counters)) >= 0


def run(decoder: mercury.MercuryDecoder | ascii.AsciiDecoder, data: bytes, cuts: list[int]):
    out: list[TagRecord] = []
    for chunk in chunked(data, cuts):
        out += decoder.feed(chunk)
    out += decoder.idle()
    counters_sane(decoder.counters)
    return out


# -- ThingMagic Mercury (binary) ------------------------------------------------------


def mercury_frames() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(mercury.encode_tag_report, RECORDS),
        st.builds(mercury.encode_tag_buffer, st.lists(RECORDS, max_size=3)),
        st.just(mercury.encode_response(mercury.OPCODE_READ_TAG_ID_MULTIPLE, 0x0400)),
    )


# Frames that pass the CRC whatever they hold: what a confused reader or firmware sends.
CRC_VALID_NONSENSE = st.builds(
    mercury.encode_response,
    st.one_of(st.sampled_from(sorted(mercury.STREAMED_OPCODES)), st.integers(0, 255)),
    st.one_of(st.just(0), st.just(0x0400), st.integers(0, 0xFFFF)),
    st.binary(max_size=255),
)


@st.composite
def crc_valid_damaged_report(draw: st.DrawFn) -> bytes:
    """A good tag report whose data is damaged and whose CRC is then made right again."""
    frame = draw(mercury_frames())  # FF, length, opcode, status (2), data, CRC (2)
    data = draw(damaged(frame[5:-2]))[:255]
    return mercury.encode_response(frame[2], int.from_bytes(frame[3:5], "big"), data)


@given(st.binary(max_size=1000), CUTS)
def test_mercury_random_bytes(data: bytes, cuts: list[int]) -> None:
    run(mercury.MercuryDecoder(), data, cuts)


@given(st.lists(st.one_of(CRC_VALID_NONSENSE, crc_valid_damaged_report()), max_size=6), CUTS)
def test_mercury_crc_valid_frames_with_nonsense_inside(frames: list[bytes], cuts: list[int]):
    decoder = mercury.MercuryDecoder()
    run(decoder, b"".join(frames), cuts)
    if all(frame[2] in mercury.STREAMED_OPCODES for frame in frames):
        # Each passes its CRC: each counts, however little sense its contents make. (A frame
        # of another opcode is not waited for when cut across chunks: not counted then.)
        assert decoder.counters.frames == len(frames)


@given(st.lists(mercury_frames().flatmap(damaged), max_size=6), CUTS)
def test_mercury_frames_damaged_in_transit(frames: list[bytes], cuts: list[int]) -> None:
    run(mercury.MercuryDecoder(), b"".join(frames), cuts)


def _frame_passing_crc_at(data: bytes, start: int) -> bool:
    if data[start] != mercury.SOF or start + 1 >= len(data):
        return False
    total = data[start + 1] + 7
    frame = data[start : start + total]
    if len(frame) < total:
        return False
    return mercury.crc16(frame[1:-2]) == int.from_bytes(frame[-2:], "big")


@given(st.binary(max_size=300), CUTS)
def test_mercury_resynchronises_on_the_good_frame_after_garbage(
    garbage: bytes, cuts: list[int]
) -> None:
    good = mercury.encode_tag_report(GOOD)
    data = garbage + good
    # A frame of the garbage that passes its CRC by chance (1 in 65,536) and swallows the
    # good frame's start is indistinguishable from a real one.
    assume(not any(_frame_passing_crc_at(data, i) for i in range(len(garbage))))
    assert seen(GOOD, run(mercury.MercuryDecoder(), data, cuts))


@given(st.binary(max_size=300), CUTS)
def test_mercury_host_side_decoder_never_raises(data: bytes, cuts: list[int]) -> None:
    decoder = mercury.FrameDecoder(replies=False)
    for chunk in chunked(data, cuts):
        decoder.feed(chunk)
    decoder.idle()


@given(st.builds(mercury.Frame, st.integers(0, 255), st.binary(max_size=300), st.just(0)))
def test_tag_records_raises_only_layout_error(frame: mercury.Frame) -> None:
    with contextlib.suppress(mercury.LayoutError):
        mercury.tag_records(frame)


def test_a_crc_valid_multi_select_report_cut_after_its_header_is_unusable() -> None:
    # Found by the properties above: option 0x88 (multi-select) shifts the header by one
    # byte, and a 6-byte report then has no response-type byte.
    frame = mercury.encode_response(0x22, 0, bytes([0x88, 0x10, 0, 0x1B, 0x01, 0xFF]))
    decoder = mercury.MercuryDecoder()
    assert decoder.feed(frame) == []
    assert decoder.counters.unusable_frames == 1


# -- one report per text line (ASCII) ---------------------------------------------------

FIELD_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["inf", "-inf", "nan", "1e999", "-1e999", "1_0", "0x10", "", " ", "-0"]),
)
ASCII_LINES = st.one_of(
    st.builds(ascii.format_line, RECORDS, st.sampled_from(["keyvalue", "positional", "bare"])),
    st.builds(
        lambda epc, key, value: f"EPC:{epc},{key}:{value}\r\n".encode("utf-8", "surrogatepass"),
        st.sampled_from(["3074257BF7194E4000001A85", "E200"]),
        st.sampled_from(["ANT", "ANTENNA", "RSSI", "PC", "TIME"]),
        FIELD_VALUES,
    ),
    st.builds(
        lambda values: (",".join(values) + "\n").encode("utf-8", "surrogatepass"),
        st.lists(FIELD_VALUES, min_size=1, max_size=4),
    ),
)


@given(st.binary(max_size=1000), CUTS)
def test_ascii_random_bytes(data: bytes, cuts: list[int]) -> None:
    run(ascii.AsciiDecoder(), data, cuts)


@given(st.lists(st.one_of(ASCII_LINES, ASCII_LINES.flatmap(damaged)), max_size=8), CUTS)
def test_ascii_lines_hostile_and_damaged(lines: list[bytes], cuts: list[int]) -> None:
    run(ascii.AsciiDecoder(), b"".join(lines), cuts)


@given(st.text(max_size=300))
def test_parse_line_raises_only_line_error(line: str) -> None:
    try:
        record = ascii.parse_line(line)
    except ascii.LineError as err:
        reason = str(err)
    else:
        assert 1 <= record.antenna <= 64 and 2 <= len(record.epc) <= 62
        return
    assert reason


@given(st.binary(max_size=300), CUTS)
def test_ascii_resynchronises_on_the_good_line_after_garbage(garbage: bytes, cuts: list[int]):
    data = garbage + b"\n" + ascii.format_line(GOOD)
    assert seen(GOOD, run(ascii.AsciiDecoder(), data, cuts))


def test_an_infinite_rssi_is_a_bad_line() -> None:
    # Found by the properties above: float("inf") parses, round() of it raises OverflowError.
    decoder = ascii.AsciiDecoder()
    assert decoder.feed(b"EPC:3074257BF7194E4000001A85,RSSI:inf\r\nEPC:E200,RSSI:-1e999\r\n") == []
    assert decoder.counters.bad_frames == 2
    assert decoder.last_error is not None and "RSSI" in decoder.last_error


# -- EPC hex -----------------------------------------------------------------------------

EPC_HEX = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=40).map(lambda b: b.hex()),
    st.builds(
        lambda header, rest: f"{header:02X}{rest.hex()}",
        st.sampled_from(sorted(HEADERS)),
        st.binary(min_size=0, max_size=40),
    ),
)


@given(EPC_HEX)
def test_decode_epc_never_raises_and_always_says_why(text: str) -> None:
    decoded = decode_epc(text)
    assert isinstance(decoded, DecodedEpc)
    assert (decoded.uri is None) <= (decoded.reason is not None)


@given(EPC_HEX)
def test_tracectl_decode_epc_answers_0_or_1(text: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = tracectl_decode_epc(text, as_json=False)
    assert code == (0 if decode_epc(text.strip().removeprefix("0x").replace(" ", "")).uri else 1)
    assert out.getvalue()
