"""Signing in to the pages: an API key (the same keys, roles and partners as the API)
opens a session; the browser keeps only the session's random token, in a cookie that
scripts cannot read (HttpOnly), that no other site's page makes the browser send
(SameSite=Strict), and that travels only over TLS when the pages are served over TLS
(Secure). The token is stored as its SHA-256 (table page_sessions, migration 0022) and
the API's own check (auth.require) accepts it: a page and the JSON routes it calls see
exactly what the key would see. A session ends at sign-out, TRACE_PAGE_SESSION_HOURS after
sign-in, or when its key is revoked, in every collector within TRACE_API_KEY_CACHE_S.

The sign-in form itself carries a token that must equal the one in a cookie set with the
form (double submit): another site cannot sign a browser in with the other site's key."""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse
from psycopg_pool import AsyncConnectionPool

from cloud_collector.auth import (
    SESSION_COOKIE,
    Keyring,
    KeysUnavailable,
    Principal,
    Role,
    csrf_token,
    key_hash,
)
from cloud_collector.pages import i18n
from cloud_collector.pages.render import page, settings_of

SIGNIN_COOKIE = "lt_signin"  # the sign-in form's own token (double submit)
# Paths reached without a session (tests/cloud_collector/test_auth.py lists them as open).
PUBLIC_PATHS = frozenset({"/", "/signin", "/signout", "/language"})

_OPEN = """
insert into page_sessions (token_hash, credential_id, expires_at)
values (%s, %s, now() + %s)
"""
_END = "update page_sessions set signed_out_at = now() where token_hash = %s"
_PRUNE = """
delete from page_sessions
where expires_at < now() - interval '1 day' or signed_out_at < now() - interval '1 day'
"""

router = APIRouter(include_in_schema=False)


def over_tls(request: Request) -> bool:
    """Whether the browser reached us over TLS (directly, or through a proxy uvicorn trusts
    to say so: --forwarded-allow-ips)."""
    return request.url.scheme == "https"


def local_target(text: str | None, fallback: str = "/") -> str:
    """Where to go after signing in or switching language: a path of this site only (an
    absolute or scheme-relative URL would send a signed-in browser elsewhere)."""
    if not text or not text.startswith("/") or text.startswith("//") or "\\" in text:
        return fallback
    if any(ord(c) < 0x20 for c in text):
        return fallback
    return text


def home(principal: Principal) -> str:
    return "/partner" if principal.role is Role.partner else "/trace"


async def open_session(pool: AsyncConnectionPool, principal: Principal, hours: float) -> str:
    """A new session for `principal`; returns its token (for the cookie, never stored)."""
    token = secrets.token_urlsafe(32)
    async with pool.connection() as conn:
        await conn.execute(_PRUNE)
        await conn.execute(
            _OPEN, (key_hash(token), principal.credential_id, timedelta(hours=hours))
        )
    return token


async def end_session(pool: AsyncConnectionPool, token: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(_END, (key_hash(token),))


def _signin_form(
    request: Request, target: str, status: int = 200, error: str | None = None
) -> Response:
    form_token = secrets.token_urlsafe(32)
    response = page(
        request, "signin.html", status=status, next=target, form_token=form_token, error=error
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        form_token,
        max_age=3600,
        path="/signin",
        secure=over_tls(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/signin")
async def signin_form(
    request: Request, next: Annotated[str, Query(max_length=2000)] = "/"
) -> Response:
    return _signin_form(request, local_target(next))


async def form_fields(request: Request) -> dict[str, str]:
    """A small urlencoded form (the pages' forms are a few fields); the body is bounded by
    the API's body limit already, the fields here by FORM_FIELD_CHARACTERS each."""
    body = (await request.body()).decode("utf-8", "replace")
    try:
        pairs = parse_qsl(body, max_num_fields=10)
    except ValueError:  # more fields than any of our forms has: not our form
        return {}
    return {name: value[:FORM_FIELD_CHARACTERS] for name, value in pairs}


FORM_FIELD_CHARACTERS = 2000


@router.post("/signin")
async def sign_in(request: Request) -> Response:
    _ = i18n.translator(i18n.choose(request))
    fields = await form_fields(request)
    key, form_token = fields.get("key", ""), fields.get("form_token", "")
    target = local_target(fields.get("next"))
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(form_token.encode(), expected.encode()):
        return _signin_form(
            request,
            target,
            403,
            _("The sign-in form has expired or was not sent from this site: sign in again."),
        )
    keyring: Keyring = request.app.state.keyring
    try:
        principal = await keyring.principal(key.strip()) if key.strip() else None
    except KeysUnavailable:
        return _signin_form(
            request, target, 503, _("The key could not be checked now: retry in a moment.")
        )
    if principal is None:
        return _signin_form(
            request,
            target,
            401,
            _("This key is unknown or revoked: ask an admin for one (tracectl credential add)."),
        )
    hours = settings_of(request).page_session_hours
    token = await open_session(request.app.state.write_pool, principal, hours)
    response = RedirectResponse(target if target != "/" else home(principal), 303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(hours * 3600),
        path="/",
        secure=over_tls(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(
        SIGNIN_COOKIE, path="/signin", secure=over_tls(request), httponly=True, samesite="strict"
    )
    return response


@router.post("/signout")
async def sign_out(request: Request) -> Response:
    """Ends the session (its form carries the session's CSRF token: another site cannot
    sign a browser out)."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        sent = (await form_fields(request)).get("csrf", "")
        if not hmac.compare_digest(sent.encode(), csrf_token(token).encode()):
            return Response("sign-out needs the page's form (CSRF token missing)", 403)
        await end_session(request.app.state.write_pool, token)
        sessions: Keyring = request.app.state.sessions
        sessions.forget()
    response = RedirectResponse("/signin", 303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=over_tls(request), httponly=True, samesite="strict"
    )
    return response


@router.get("/language")
async def switch_language(
    request: Request, to: str = i18n.ENGLISH, next: Annotated[str, Query(max_length=2000)] = "/"
) -> Response:
    """The language switch: a preference cookie, then back to the page."""
    response = RedirectResponse(local_target(next), 303)
    if to in i18n.LANGUAGES:
        response.set_cookie(
            i18n.LANG_COOKIE,
            to,
            max_age=365 * 86400,
            path="/",
            secure=over_tls(request),
            httponly=True,
            samesite="lax",
        )
    return response


@router.get("/")
async def start(request: Request) -> Response:
    """The signed-in reader's home, or the sign-in form."""
    token = request.cookies.get(SESSION_COOKIE)
    principal = None
    if token:
        sessions: Keyring = request.app.state.sessions
        try:
            principal = await sessions.principal(token)
        except KeysUnavailable:
            principal = None
    if principal is None:
        return RedirectResponse("/signin", 303)
    return RedirectResponse(home(principal), 303)


def signin_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/signin?" + urlencode({"next": target})
