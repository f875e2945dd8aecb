"""Scanner framing and GS1 reading against hostile input: no scan raises; every scan is
exactly one of well-formed GS1 data, a misread with its reason, or plain text; what looks
like GS1 data is never plain; a single wrong digit in a GTIN or SSCC is always a misread;
a misread matches no rule, not even a rule that matches everything."""

from __future__ import annotations

import contextlib
import io

from hypothesis import given
from hypothesis import strategies as st

from device_profiles.schema import ScanRule
from protocols.gs1 import check_digit as gs1_check_digit
from protocols.scanner.framing import ScanFramer, Terminator
from protocols.scanner.gs1 import GS, SYMBOLOGIES, Gs1Scan, parse_scan
from protocols.scanner.rules import meaning_of
from tests.hostile_input import chunked, damaged
from tracectl.decode import decode_barcode, typed_label

EVERYTHING = [ScanRule(meaning="receive", pattern="")]  # a rule that matches any text
GS1_SYMBOLOGIES = [s for s, (_, reading) in SYMBOLOGIES.items() if reading == "gs1"]
AIS = ["00", "01", "02", "10", "11", "17", "21", "30", "37", "400", "402", "414", "3103", "99"]


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n)


def with_check_digit(body: str) -> str:
    return body + gs1_check_digit(body)


GTINS = digits(13).map(with_check_digit)
SSCCS = digits(17).map(with_check_digit)
LOTS = st.text("ABCXYZ0123456789-/.", min_size=1, max_size=20)
# Well-formed element strings: a key, then variable-length fields each ended by GS.
ELEMENT_STRINGS = st.builds(
    lambda key, lot, serial: key + "10" + lot + GS + "21" + serial,
    st.one_of(GTINS.map(lambda g: "01" + g), SSCCS.map(lambda s: "00" + s)),
    LOTS,
    LOTS,
)
TEXT = st.one_of(
    st.text(max_size=120),
    st.text("0123456789()/:.%?=&-\x1d]CdeQ1230 ", max_size=60),
)


def outcome(scan: Gs1Scan) -> str:
    """Exactly one of the three, and the fields agree with it."""
    if scan.kind == "plain":
        assert (scan.ais, scan.errors, scan.misread) == ({}, [], None)
        return "plain"
    if scan.misread is not None:
        assert not scan.is_gs1 and scan.errors
        assert meaning_of(scan, EVERYTHING) is None
        return "misread"
    assert scan.is_gs1 and scan.check_digits_ok
    return "gs1"


SYMBOLOGY = st.one_of(st.none(), st.sampled_from(sorted(SYMBOLOGIES)), st.text(max_size=3))


@given(TEXT, SYMBOLOGY)
def test_any_text_is_gs1_a_misread_or_plain(text: str, symbology: str | None) -> None:
    outcome(parse_scan(text, symbology))


@given(st.sampled_from(GS1_SYMBOLOGIES), TEXT)
def test_a_gs1_symbology_is_never_plain(symbology: str, text: str) -> None:
    assert outcome(parse_scan(text, symbology)) != "plain"
    assert outcome(parse_scan(symbology + text)) != "plain"


@given(st.from_regex(r"\A\s*\([0-9]{2,4}\)", fullmatch=False), TEXT)
def test_a_bracketed_ai_at_the_start_is_never_plain(start: str, rest: str) -> None:
    assert outcome(parse_scan(start + rest)) != "plain"


NOT_GS = st.characters(exclude_characters=GS)


@given(TEXT, st.text(NOT_GS, min_size=1), st.text(NOT_GS, min_size=1), TEXT)
def test_a_gs_separator_inside_or_in_front_is_never_plain(
    text: str, before: str, after: str, rest: str
) -> None:
    assert outcome(parse_scan(before + GS + after + rest)) != "plain"
    assert outcome(parse_scan(GS + text)) != "plain"


@given(st.sampled_from(["01", "02"]), digits(14), TEXT)
def test_a_whole_gtin_field_at_the_start_is_never_plain(ai: str, gtin: str, rest: str) -> None:
    assert outcome(parse_scan(ai + gtin + rest)) != "plain"


KEYS_IN_PATH = st.sampled_from(["00", "01", "414", "8004", "253"])


@given(
    st.sampled_from(["https://id.gs1.org", "https://example.com/qr", "HTTP://x.y"]),
    KEYS_IN_PATH,
    digits(6),
    st.text("0123456789ABZ/?=%&.-", max_size=40),
)
def test_a_web_address_naming_a_gs1_key_is_never_plain(
    host: str, key: str, start: str, rest: str
) -> None:
    assert outcome(parse_scan(f"{host}/{key}/{start}{rest}")) != "plain"


@given(st.text(max_size=200).map(lambda path: "https://example.com/" + path))
def test_any_web_address_reads_without_raising(url: str) -> None:
    outcome(parse_scan(url))


@given(ELEMENT_STRINGS, st.sampled_from([None, "]C1", "]d2"]))
def test_well_formed_element_strings_read_as_gs1(data: str, symbology: str | None) -> None:
    scan = parse_scan(data, symbology)
    assert outcome(scan) == "gs1", scan
    assert parse_scan(scan.text).ais == scan.ais  # its bracketed form reads the same


@given(ELEMENT_STRINGS, st.sampled_from([None, "]C1"]), st.integers(2, 15), st.integers(1, 9))
def test_one_wrong_digit_in_the_key_is_always_a_misread(
    data: str, symbology: str | None, position: int, delta: int
) -> None:
    # The GS1 check digit catches every single-digit error: a damaged key is never read
    # as another, valid key, nor as plain text.
    wrong = str((int(data[position]) + delta) % 10)
    damaged_key = data[:position] + wrong + data[position + 1 :]
    assert outcome(parse_scan(damaged_key, symbology)) == "misread"


@given(ELEMENT_STRINGS.flatmap(lambda s: damaged(s.encode()).map(lambda b: b.decode("latin-1"))))
def test_damaged_element_strings_read_without_raising(data: str) -> None:
    outcome(parse_scan(data, "]C1"))
    outcome(parse_scan(data))


@given(TEXT, SYMBOLOGY)
def test_tracectl_decode_barcode_exits_0_only_for_gs1(text: str, symbology: str | None) -> None:
    label = (symbology or "") + text
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = decode_barcode(label, as_json=False)
    expected = outcome(parse_scan(typed_label(label)))
    assert (code == 0) == (expected == "gs1"), out.getvalue()
    assert f"outcome: {expected}" in out.getvalue()


# -- framing -------------------------------------------------------------------------------

TERMINATORS = st.sampled_from(["\r", "\n", "\r\n"])
CUTS = st.lists(st.integers(0, 10_000), max_size=8)


@given(st.binary(max_size=2000), TERMINATORS, CUTS, st.integers(1, 300))
def test_framing_never_raises(
    data: bytes, terminator: Terminator, cuts: list[int], max_length: int
) -> None:
    framer = ScanFramer(terminator, max_length)
    scans = [scan for chunk in chunked(data, cuts) for scan in framer.feed(chunk)]
    scans += framer.flush()
    for scan in scans:
        assert scan.text and len(scan.text) <= max_length
        assert "\x00" not in scan.text
        outcome(parse_scan(scan.text, scan.symbology))
    assert framer.scans == len(scans) and framer.garbage >= 0


@given(st.binary(max_size=500), CUTS)
def test_framing_resynchronises_on_the_scan_after_garbage(garbage: bytes, cuts: list[int]) -> None:
    framer = ScanFramer("\r")
    data = garbage + b"\r]C10109501101530003\x1d10LOT-7\r"
    scans = [scan for chunk in chunked(data, cuts) for scan in framer.feed(chunk)]
    assert scans[-1].text == "0109501101530003\x1d10LOT-7" and scans[-1].symbology == "]C1"
