"""Every text of the pages has its Simplified Chinese, the browser's languages are read by
their q-values, and the vendored libraries are the files VERSIONS and SHA256SUMS name."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from cloud_collector.pages import i18n
from cloud_collector.pages.render import STATIC
from cloud_collector.trace.models import RecallLine

PAGES = Path(i18n.__file__).parent
# The values a template shows through `_()` from the data (lot origins, recall statuses).
SHOWN_VALUES = {"supplier", "own", "unknown", "shipped", "on hand"}


def test_every_text_of_the_pages_has_its_chinese() -> None:
    texts = set()
    for source in [*PAGES.glob("templates/*.html"), *PAGES.glob("*.py")]:
        texts |= set(re.findall(r'_\(\s*"((?:[^"\\]|\\.)*)"\s*\)', source.read_text()))
    catalog = i18n._CATALOGS[i18n.CHINESE]
    assert len(texts) > 100
    assert sorted(texts - catalog.keys()) == []
    assert sorted(SHOWN_VALUES - catalog.keys()) == []
    assert all(catalog[t] and catalog[t] != t for t in texts)
    # The values shown are the ones the models can hold.
    origins = {"supplier", "own", "unknown"}  # lots.origin's check constraint (0004)
    statuses = {s.replace("_", " ") for s in RecallLine.model_fields["status"].annotation.__args__}
    assert origins | statuses == SHOWN_VALUES


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", i18n.CHINESE),
        ("en-US,en;q=0.9,zh-CN;q=0.8", i18n.ENGLISH),
        ("de-DE,zh-TW;q=0.5,en;q=0.4", i18n.CHINESE),
        ("fr, en;q=0.1, zh;q=0.2", i18n.CHINESE),
        ("zh;q=0", i18n.ENGLISH),
        ("", i18n.ENGLISH),
        ("zh;q=abc,en", i18n.ENGLISH),
    ],
)
def test_the_browser_s_languages_by_their_q_values(header: str, expected: str) -> None:
    assert i18n.from_accept_language(header) == expected


def test_the_vendored_libraries_are_the_ones_listed() -> None:
    vendor = STATIC / "vendor"
    sums = dict(
        reversed(line.split(None, 1)) for line in (vendor / "SHA256SUMS").read_text().splitlines()
    )
    listed = {
        line.split()[0]: line.split()[3:]
        for line in (vendor / "VERSIONS").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert set(listed) == {"echarts", "cytoscape", "elkjs"}
    for package, files in listed.items():
        for file in files:
            name = Path(file).name if file.endswith(".js") else f"{package}-{Path(file).name}"
            assert name in sums, f"{name} of {package} is not in SHA256SUMS"
    for name, digest in sums.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
