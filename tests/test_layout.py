"""The README's Layout table names every folder of the tree that holds code: a folder added
without a row fails here (the table is kept from the tree, not from memory)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["protocols", "device_profiles", "edge_agent", "cloud_collector", "tracectl", "bench"]


def named_in_layout() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in table.splitlines():
        first = row.split("|")[1] if row.startswith("|") else ""
        parts = re.findall(r"`([\w/.]+)/`", first)
        if not parts:
            continue
        base = parts[0].rsplit("/", 1)[0] + "/" if parts and "/" in parts[0] else ""
        named |= {parts[0]} | {base + p if "/" not in p else p for p in parts[1:]}
    return named


def test_every_code_folder_has_a_row_in_the_readme_layout() -> None:
    folders = {"deploy", "docs", "tests", *PACKAGES}
    for package in PACKAGES:
        for sub in (ROOT / package).iterdir():
            if sub.is_dir() and (any(sub.glob("*.py")) or any(sub.glob("*.sql"))):
                folders.add(f"{package}/{sub.name}")
    missing = sorted(folders - named_in_layout())
    assert not missing, f"README Layout has no row for: {missing}"
