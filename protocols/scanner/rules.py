"""What a scan means at a station: the profile's scan rules, first match wins (pure).

A rule matches when the scan carries every GS1 application identifier the rule lists and,
if the rule has a pattern, the pattern is found (re.search, not anchored: write ^ to
anchor) in the scan's text: for GS1 data its bracketed form `(01)...(10)...`, whatever
barcode it came from; for plain text, the text as scanned.

A misread (GS1 data that does not parse, or whose check digit or date fails) matches no
rule: its identifiers cannot be trusted, and its raw text must not pass for a plain code
that a pattern written for work orders or badges happens to find.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from protocols.scanner.gs1 import Gs1Scan
from protocols.scanner.profile import ScanRule


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    # The profile validated the pattern already; compiling once keeps a scan burst cheap.
    return re.compile(pattern)


def matches(scan: Gs1Scan, rule: ScanRule) -> bool:
    if scan.misread is not None:
        return False
    if not all(ai in scan.ais for ai in rule.ais):
        return False
    return rule.pattern is None or _compiled(rule.pattern).search(scan.text) is not None


def meaning_of(scan: Gs1Scan, rules: Sequence[ScanRule]) -> ScanRule | None:
    """The first rule that matches `scan`, or None when the scan means nothing here."""
    return next((rule for rule in rules if matches(scan, rule)), None)
