"""The edge's site file against hostile content: `load_site` must answer SiteError (its
documented refusal), never another exception. PyYAML's own errors outside YAMLError
(an impossible date, deep nesting, bytes that are not UTF-8) included."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.site import SiteError, load_site
from tests.hypothesis_profiles import load_from_env

load_from_env()
FOLDER = Path(tempfile.mkdtemp(prefix="site-properties-"))


@pytest.mark.parametrize(
    "content",
    [
        b"lines: 2026-13-01\n",  # ValueError: month must be in 1..12
        b"[" * 5000,  # RecursionError in PyYAML's composer
        "name: K\xfchler\n".encode("latin-1"),  # UnicodeDecodeError
    ],
    ids=["no-date", "deep", "latin-1"],
)
def test_a_hostile_site_file_is_a_site_error(content: bytes) -> None:
    path = FOLDER / "site.yaml"
    path.write_bytes(content)
    with pytest.raises(SiteError):
        load_site(path)


@given(st.binary(min_size=1, max_size=200))
def test_any_site_file_loads_or_is_a_site_error(content: bytes) -> None:
    path = FOLDER / "any.yaml"
    path.write_bytes(content)
    with contextlib.suppress(SiteError):
        load_site(path)
