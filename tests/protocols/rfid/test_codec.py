"""The Mercury CRC against frames from real modules, and the encoders against the
decoders (the simulator speaks through the encoders)."""

from __future__ import annotations

import pytest

from protocols.rfid import mercury
from protocols.rfid.ascii import AsciiDecoder, format_line
from protocols.rfid.records import TagRecord

# Frames captured from ThingMagic modules (SparkFun's library and a protocol write-up of
# MercuryAPI transport logs): body without FF, then the CRC the module sent.
CAPTURED = [
    "FF0329005700A322",  # Get Tag ID Buffer, metadata 0x0057
    "FF0A2403E800000000000300EE589D",  # Write Tag Data, user bank
    "FF2822000010001B01FF0101C4110E16400000012700000500000F0080300000000000000000000000"
    "1545E94A561D",  # a continuous-read tag report
]
RECORD = TagRecord(bytes.fromhex("3074257BF7194E4000001A85"), 2, -57, 0x3000)


@pytest.mark.parametrize("frame", CAPTURED)
def test_crc_matches_frames_from_real_modules(frame: str) -> None:
    raw = bytes.fromhex(frame)
    assert mercury.crc16(raw[1:-2]) == int.from_bytes(raw[-2:], "big")


def test_start_command_is_the_universal_reader_assistant_blob() -> None:
    assert mercury.START_CONTINUOUS_READ.hex().upper() == (
        "FF102F00000122000005072210001B03E801FFDD2B"
    )
    assert mercury.STOP_CONTINUOUS_READ[:6] == bytes.fromhex("FF032F000002")


@pytest.mark.parametrize("metadata", [0x01FF, 0x0006, 0x0004, 0x00C7])
def test_encoded_reports_decode_to_the_same_record(metadata: int) -> None:
    frame = mercury.encode_tag_report(RECORD, metadata)
    (decoded,) = mercury.MercuryDecoder().feed(frame)
    rssi = RECORD.rssi_dbm if metadata & mercury.Metadata.RSSI else None
    assert decoded == TagRecord(RECORD.epc, RECORD.antenna, rssi, RECORD.pc)


def test_commands_decode_without_a_status_word() -> None:
    frames = mercury.FrameDecoder(replies=False).feed(
        mercury.START_CONTINUOUS_READ + mercury.STOP_CONTINUOUS_READ
    )
    assert [(f.opcode, f.data[2]) for f in frames] == [(0x2F, 0x01), (0x2F, 0x02)]


def test_a_missing_pc_is_filled_from_the_epc_length() -> None:
    frame = mercury.encode_tag_report(TagRecord(RECORD.epc, 1, -60))
    (decoded,) = mercury.MercuryDecoder().feed(frame)
    assert decoded.pc == 0x3000  # 6 words of EPC, no user memory, no XPC


@pytest.mark.parametrize("style", ["keyvalue", "positional"])
def test_ascii_lines_round_trip(style: str) -> None:
    assert AsciiDecoder().feed(format_line(RECORD, style)) == [
        TagRecord(RECORD.epc, 2, -57, RECORD.pc if style == "keyvalue" else None)
    ]


def test_garbage_never_raises() -> None:
    noise = bytes(range(256)) * 8
    for decoder in (mercury.MercuryDecoder(), AsciiDecoder()):
        assert decoder.feed(noise) == []
        decoder.idle()
        assert decoder.counters.bad_frames >= 1
