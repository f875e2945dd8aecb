"""Signing in to the pages, over plain HTTP (no browser): the session cookie's attributes,
the CSRF rules of sign-in, sign-out and of the API's changing routes called with a
session, expiry, revocation, and where a sign-in may lead."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from cloud_collector import auth
from cloud_collector.auth import CSRF_HEADER, SESSION_COOKIE, Role
from tests.cloud_collector.pages.seed import signed_in
from tests.conftest import RunningCollector, Services


def _form_token(page: httpx.Response) -> str:
    return page.text.split('name="form_token" value="', 1)[1].split('"', 1)[0]


async def test_a_key_opens_a_session_in_an_httponly_strict_cookie(
    collector: RunningCollector,
) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as http:
        form = await http.get("/signin", params={"next": "/batches"})
        answer = await http.post(
            "/signin",
            data={
                "key": collector.keys[Role.reader],
                "form_token": _form_token(form),
                "next": "/batches",
            },
        )
        cookie = next(
            v
            for k, v in answer.headers.multi_items()
            if k == "set-cookie" and v.startswith(SESSION_COOKIE)
        )
        listed = await http.get("/batches")
        api = await http.get("/api/v1/batches", params={"limit": 1})
    assert answer.status_code == 303 and answer.headers["location"] == "/batches"
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes and "secure" not in attributes
    assert "samesite=strict" in cookie.lower()
    assert listed.status_code == 200 and "<h1>Batches</h1>" in listed.text
    # The same session reaches the JSON API, with the key's role.
    assert api.status_code == 200 and isinstance(api.json(), list)


async def test_over_tls_the_cookie_is_secure(collector: RunningCollector) -> None:
    # uvicorn trusts the proxy at 127.0.0.1 to say the browser came over TLS.
    tls = {"X-Forwarded-Proto": "https"}
    async with httpx.AsyncClient(base_url=collector.api_url, headers=tls) as http:
        form = await http.get("/signin")
        # httpx, like a browser, keeps a Secure cookie for https: hand it over here.
        answer = await http.post(
            "/signin",
            data={"key": collector.keys[Role.reader], "form_token": _form_token(form)},
            headers={"Cookie": f"lt_signin={_form_token(form)}"},
        )
    cookies = [v for k, v in answer.headers.multi_items() if k == "set-cookie"]
    form_cookie = form.headers["set-cookie"]
    assert "secure" in [a.strip().lower() for a in form_cookie.split(";")]
    session = next(c for c in cookies if c.startswith(SESSION_COOKIE))
    assert "secure" in [a.strip().lower() for a in session.split(";")]
    assert all("secure" in c.lower() for c in cookies)


async def test_a_bad_key_or_a_form_from_elsewhere_opens_nothing(
    collector: RunningCollector,
) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as http:
        form = await http.get("/signin")
        bad_key = await http.post(
            "/signin", data={"key": "lt_" + "x" * 43, "form_token": _form_token(form)}
        )
    # Another site's page posting a key (login CSRF): it has not our form's cookie.
    async with httpx.AsyncClient(base_url=collector.api_url) as elsewhere:
        forged = await elsewhere.post(
            "/signin", data={"key": collector.keys[Role.reader], "form_token": "guessed"}
        )
    assert bad_key.status_code == 401 and "unknown or revoked" in bad_key.text
    assert forged.status_code == 403 and "expired or was not sent from this site" in forged.text
    for answer in (bad_key, forged):
        assert SESSION_COOKIE not in answer.headers.get("set-cookie", "").split("=")[0]


async def test_a_changing_request_with_a_session_needs_its_csrf_token(
    collector: RunningCollector,
) -> None:
    condition = {
        "tag": "temperature",
        "condition": "above",
        "limit": 1,
        "from": "2026-11-20T00:00:00+00:00",
        "to": "2026-11-21T00:00:00+00:00",
    }
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        page = await http.get("/trace")
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        without = await http.post("/api/v1/recall/by-condition", json=condition)
        wrong = await http.post(
            "/api/v1/recall/by-condition", json=condition, headers={CSRF_HEADER: "0" * 64}
        )
        right = await http.post(
            "/api/v1/recall/by-condition", json=condition, headers={CSRF_HEADER: token}
        )
        signout_forged = await http.post("/signout", data={"csrf": "nope"})
        still = await http.get("/trace")
    assert without.status_code == 403 and CSRF_HEADER in without.text
    assert wrong.status_code == 403
    assert right.status_code == 200, right.text
    assert signout_forged.status_code == 403 and still.status_code == 200


async def test_sign_out_ends_the_session_for_pages_and_api(collector: RunningCollector) -> None:
    async with signed_in(collector, collector.keys[Role.reader]) as http:
        page = await http.get("/trace")
        token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        session = http.cookies[SESSION_COOKIE]
        out = await http.post("/signout", data={"csrf": token})
        http.cookies.set(SESSION_COOKIE, session)  # a copy of the cookie kept elsewhere
        after_page = await http.get("/trace")
        after_api = await http.get("/api/v1/batches")
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert after_page.status_code == 303 and after_page.headers["location"].startswith("/signin")
    assert after_api.status_code == 401 and "sign in again" in after_api.text


async def test_an_expired_session_or_a_revoked_key_signs_nobody_in(
    services: Services, collector: RunningCollector
) -> None:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        issued = await auth.issue(c, f"t-{uuid.uuid4().hex[:8]}", Role.reader)
        # A session of that key opened 13 hours ago (sessions last 12 h): never looked up.
        expired = "expired-" + uuid.uuid4().hex
        await c.execute(
            "insert into page_sessions (token_hash, credential_id, created_at, expires_at)"
            " select %s, credential_id, %s, %s from api_credentials where name = %s",
            (
                auth.key_hash(expired),
                datetime.now(UTC) - timedelta(hours=13),
                datetime.now(UTC) - timedelta(hours=1),
                issued.name,
            ),
        )
    async with signed_in(collector, issued.key) as http:
        session = http.cookies[SESSION_COOKIE]
        alive = await http.get("/api/v1/batches", params={"limit": 1})
        http.cookies.set(SESSION_COOKIE, expired)
        old = await http.get("/api/v1/batches", params={"limit": 1})
        async with await psycopg.AsyncConnection.connect(services.database_url) as c:
            await auth.revoke(c, issued.name)
            await c.commit()
        # The session's answer is reused for TRACE_API_KEY_CACHE_S: past it, refused.
        await asyncio.sleep(collector.settings.api_key_cache_s + 0.5)
        http.cookies.set(SESSION_COOKIE, session)
        revoked = await http.get("/api/v1/batches", params={"limit": 1})
    assert alive.status_code == 200
    assert old.status_code == 401 and "expired" in old.text
    assert revoked.status_code == 401


async def test_sign_in_leads_only_to_a_page_of_this_site(collector: RunningCollector) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as http:
        for target, expected in [
            ("//evil.example/x", "/trace"),
            ("https://evil.example/", "/trace"),
            ("/\\evil.example", "/trace"),
            ("/recall?lot=1", "/recall?lot=1"),
        ]:
            form = await http.get("/signin", params={"next": target})
            answer = await http.post(
                "/signin",
                data={
                    "key": collector.keys[Role.reader],
                    "form_token": _form_token(form),
                    "next": target,
                },
            )
            assert answer.headers["location"] == expected, target
        switched = await http.get("/language", params={"to": "zh-Hans", "next": "//evil.example"})
    assert switched.headers["location"] == "/"


async def test_without_a_session_a_page_leads_to_sign_in_and_back(
    collector: RunningCollector,
) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as http:
        answer = await http.get("/trace", params={"lot": "X 1"})
        start = await http.get("/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Ftrace%3Flot%3DX%2B1"
    assert start.headers["location"] == "/signin"
