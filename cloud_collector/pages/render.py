"""Pages as HTML: one Jinja environment (autoescape on for every template, undefined names
are errors), the filters that show dates in the plant's time zone and quantities with
their unit, and the headers every page carries (a Content-Security-Policy that runs only
the scripts served from here: no inline script, no eval).

What a page's script needs travels as JSON in `<script type="application/json">`, written
by Jinja's `tojson` (which escapes `<`, `>`, `&` and `'`): never spliced into code."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from cloud_collector.auth import SESSION_COOKIE, Principal, csrf_token
from cloud_collector.pages import i18n
from cloud_collector.settings import CollectorSettings

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
STATIC_URL = "/static/pages"

# 'self' only. Styles too: the libraries set styles through the DOM (allowed), never as
# inline attributes or <style> text. The ELK layout runs in a worker served from here.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # A page shows one person's view of the records: never kept by a shared cache.
    "Cache-Control": "no-store",
}

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def quantity(value: float | None, uom: str | None = None) -> str:
    """A quantity as people write it: no trailing zeros, thousands grouped, its unit."""
    if value is None:
        return "?"
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{text} {uom}" if uom else text


def number(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def settings_of(request: Request) -> CollectorSettings:
    settings: CollectorSettings = request.app.state.settings
    return settings


def plant_zone(request: Request) -> ZoneInfo:
    return ZoneInfo(settings_of(request).plant_timezone)


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """`template` rendered for this request: its language, the plant's time zone, who is
    signed in (and the session's CSRF token for its forms), with the security headers."""
    language = i18n.choose(request)
    zone = plant_zone(request)
    principal: Principal | None = getattr(request.state, "principal", None)
    session = request.cookies.get(SESSION_COOKIE)

    def when(moment: datetime | None, seconds: bool = False) -> str:
        if moment is None:
            return ""
        shown = moment.astimezone(zone)
        return shown.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z")

    html = _env.get_template(template).render(
        request_path=request.url.path,
        request_target=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        language=language,
        languages=i18n.LANGUAGES,
        _=i18n.translator(language),
        zone=zone.key,
        principal=principal,
        csrf=csrf_token(session) if session and principal else "",
        static=STATIC_URL,
        when=when,
        quantity=quantity,
        number=number,
        **{"error": None, "candidates": None, **context},
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
