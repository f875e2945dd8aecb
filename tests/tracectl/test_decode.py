"""`tracectl decode`: a technician's check of a tag or a label."""

from __future__ import annotations

import json

import pytest

from tracectl.__main__ import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(["decode", *args])
    return int(done.value.code or 0), capsys.readouterr().out


def test_epc_of_the_tag_data_standard_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "epc", "3074257BF7194E4000001A85", "--json")
    fields = json.loads(out)
    assert code == 0
    assert fields["uri"] == "urn:epc:id:sgtin:0614141.812345.6789"
    assert (fields["gtin"], fields["serial"]) == ("80614141123458", "6789")


def test_an_undecodable_tag_says_why_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "epc", "E2801160600002084D2A11FF")
    assert code == 1 and "reason" in out


def test_a_gs1_128_label_with_a_typed_separator(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "barcode", "]C1010950600013435210FLOUR7<GS>17270531", "--json")
    fields = json.loads(out)
    assert code == 0
    assert (fields["gtin"], fields["lot"], fields["expiry"]) == (
        "09506000134352",
        "FLOUR7",
        "2027-05-31",
    )
    assert fields["symbology"] == "]C1" and fields["check_digits_ok"] is True


def test_a_wrong_check_digit_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "barcode", "(01)09506000134353(10)X")
    assert code == 1 and "check_digits_ok: False" in out


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("0112345678901234", "check digit 4 is wrong, expected 1"),  # no AIM identifier
        ("]C10109506000134352LOT", "not a valid GS1 element string"),
        ("(01)09506000134352(10)", "each AI followed by its value"),
        ("https://id.gs1.org/01/0950600013435X", "not a valid GS1 Digital Link URI"),
        ("]C1010950600013435217270231", "'270231' is not a date"),
    ],
)
def test_a_misread_says_why_and_fails(
    capsys: pytest.CaptureFixture[str], label: str, reason: str
) -> None:
    code, out = run(capsys, "barcode", label, "--json")
    fields = json.loads(out)
    assert code == 1
    assert fields["outcome"] == "misread" and reason in fields["reason"]


@pytest.mark.parametrize("label", ["WO-12345", "]C0WO-12345", "https://example.com/manual"])
def test_plain_text_is_not_gs1_data_and_fails(
    capsys: pytest.CaptureFixture[str], label: str
) -> None:
    code, out = run(capsys, "barcode", label)
    assert code == 1
    assert "outcome: plain" in out and "not GS1 data" in out


def test_well_formed_gs1_data_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "barcode", "https://id.gs1.org/01/09506000134352/10/FLOUR7")
    assert code == 0 and "outcome: gs1" in out and "reason" not in out
