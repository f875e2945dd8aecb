"""The pages' languages: English (the text in the templates) and Simplified Chinese (the
catalog beside this file, English text -> Chinese). The reader's choice: the `lt_lang`
cookie the language switch sets, else the browser's Accept-Language, else English.

Text that comes from the trace queries themselves (the gaps, error details) stays in
English: it is the API's words, and a translated paraphrase could say something else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request

ENGLISH = "en"
CHINESE = "zh-Hans"
# Code -> the language's own name, as the switch shows it.
LANGUAGES: dict[str, str] = {ENGLISH: "English", CHINESE: "简体中文"}
LANG_COOKIE = "lt_lang"
CATALOG_DIR = Path(__file__).parent / "catalog"

_CATALOGS: dict[str, dict[str, str]] = {
    CHINESE: json.loads((CATALOG_DIR / f"{CHINESE}.json").read_text(encoding="utf-8")),
}

Translate = Callable[[str], str]


def choose(request: Request) -> str:
    """The language of this request's page."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return from_accept_language(request.headers.get("accept-language", ""))


def from_accept_language(header: str) -> str:
    """The first language of an Accept-Language header we have, by its q-value (any
    Chinese is served Simplified Chinese: it is the one we have)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag.strip().lower()))
    for negative_quality, _, tag in sorted(ranked):
        if negative_quality >= 0:
            break
        if tag == "zh" or tag.startswith("zh-"):
            return CHINESE
        if tag == "en" or tag.startswith("en-"):
            return ENGLISH
    return ENGLISH


def translator(language: str) -> Translate:
    """The page's `_`: English text in, the language's text out (English when the catalog
    has no entry, which tests/cloud_collector/pages/test_i18n.py forbids for the pages'
    own text)."""
    catalog = _CATALOGS.get(language, {})
    return lambda text: catalog.get(text, text)
