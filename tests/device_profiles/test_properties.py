"""Device profiles against hostile files: whatever a profile file holds (any text, any
bytes, YAML that builds impossible dates, deep nesting or self-referencing lists, a ready
profile with one value replaced), `load_profile` returns a profile or raises ProfileError
naming the file, never anything else."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from device_profiles import LIBRARY
from device_profiles.schema import ProfileError, load_profile, parse_profile
from tests.hostile_input import HOSTILE_JSON, damaged, one_value_replaced

READY = sorted(LIBRARY.glob("*.yaml"))
READY_TEXTS = [path.read_bytes() for path in READY]
READY_DATA = [yaml.safe_load(text) for text in READY_TEXTS]
FOLDER = Path(tempfile.mkdtemp(prefix="profile-properties-"))


def refusal(data: Any = None, path: Path | None = None) -> ProfileError | None:
    try:
        if path is not None:
            load_profile(path)
        else:
            parse_profile(data)
    except ProfileError as err:
        return err
    return None


def loaded(content: bytes) -> None:
    path = FOLDER / "profile.yaml"
    path.write_bytes(content)
    err = refusal(path=path)
    assert err is None or (err.problems and str(path) in str(err))


@given(st.binary(max_size=2000))
def test_any_bytes(content: bytes) -> None:
    loaded(content)


@given(st.text(max_size=500))
def test_any_text(text: str) -> None:
    loaded(text.encode("utf-8", "surrogatepass"))


@given(st.sampled_from(READY_TEXTS).flatmap(damaged))
def test_a_ready_profile_damaged(content: bytes) -> None:
    loaded(content)


@given(st.sampled_from(READY_DATA).flatmap(one_value_replaced))
def test_a_ready_profile_with_one_value_replaced(data: Any) -> None:
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return  # not representable as YAML: no file can hold it
    loaded(text.encode("utf-8", "surrogatepass"))
    err = refusal(data)
    assert err is None or err.problems


@given(HOSTILE_JSON)
def test_parse_profile_of_any_value(data: Any) -> None:
    err = refusal(data)
    assert err is None or err.problems


@pytest.mark.parametrize(
    "text",
    [
        "profile_version: 2020-13-45\n",  # YAML's date that is no date: ValueError
        "name: 2021-02-30\n",
        "[" * 5000 + "]" * 5000,  # deeper than PyYAML's recursion
        "a: &a [*a]\n",  # a list that holds itself
        "rules: &r [*r]\nprofile_version: 1\nname: x\nprotocol: scanner_wedge\n",
        "\x00",
        "a: !!binary 'not base64?'\n",
        "a: !!python/object/apply:os.system ['true']\n",
    ],
    ids=["no-date", "no-day", "deep", "self-list", "self-rules", "nul", "binary", "python-tag"],
)
def test_hostile_yaml_is_a_profile_error(text: str) -> None:
    path = FOLDER / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as refused:
        load_profile(path)
    assert str(path) in str(refused.value)


def test_a_file_that_is_not_utf8_is_a_profile_error() -> None:
    path = FOLDER / "latin1.yaml"
    path.write_bytes("name: Kühler\n".encode("latin-1"))
    with pytest.raises(ProfileError, match="UTF-8"):
        load_profile(path)
