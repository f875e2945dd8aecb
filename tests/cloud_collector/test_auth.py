"""API keys and roles: 401 without a key in force, 403 with the wrong role; partners see only
the lots shipped to them and capture only at their locations; tracectl issues and revokes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from cloud_collector import auth, pages
from cloud_collector.api import create_app
from cloud_collector.auth import Partner, Role
from cloud_collector.endpoints import connection, primary_connection
from cloud_collector.settings import CollectorSettings
from tests.conftest import RunningCollector, Services, until
from tracectl.__main__ import main as tracectl

OPEN_ROUTES = {"/healthz", *pages.PUBLIC_PATHS}


async def issue(services: Services, role: Role, partner: str | None = None) -> auth.IssuedKey:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        return await auth.issue(c, f"t-{uuid.uuid4().hex[:8]}", role, partner)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_no_key_or_an_unknown_one_is_a_401_with_a_challenge(
    collector: RunningCollector,
) -> None:
    async with httpx.AsyncClient(base_url=collector.api_url) as api:
        assert (await api.get("/healthz")).status_code == 200
        missing = await api.get("/api/v1/batches")
        wrong = await api.get("/api/v1/batches", headers=bearer(auth.new_key()))
        not_bearer = await api.get("/api/v1/batches", headers={"Authorization": "Basic eDp5"})
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "tracectl credential add" in missing.json()["detail"]
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert "unknown or revoked" in wrong.json()["detail"]
    assert not_bearer.status_code == 401


async def test_a_revoked_key_is_refused_at_once(
    services: Services, collector: RunningCollector
) -> None:
    issued = await issue(services, Role.reader)
    async with httpx.AsyncClient(base_url=collector.api_url) as api:
        assert (await api.get("/api/v1/batches", headers=bearer(issued.key))).status_code == 200
        by_header = await api.get("/api/v1/batches", headers={"X-API-Key": issued.key})
        assert by_header.status_code == 200
        async with collector.client(Role.admin) as admin:
            assert (await admin.delete(f"/api/v1/credentials/{issued.name}")).status_code == 200
            assert (await admin.delete(f"/api/v1/credentials/{issued.name}")).status_code == 404
        assert (await api.get("/api/v1/batches", headers=bearer(issued.key))).status_code == 401


async def test_roles_are_separate_and_admin_may_do_everything(
    collector: RunningCollector,
) -> None:
    customer = [{"customer_id": f"C-{uuid.uuid4().hex[:6]}", "name": "Role Test Ltd"}]
    async with collector.client(Role.reader) as reader:
        refused = await reader.put("/api/v1/erp/customers", json=customer)
        assert (await reader.get("/api/v1/credentials")).status_code == 403
    async with collector.client(Role.importer) as importer:
        imported = await importer.put("/api/v1/erp/customers", json=customer)
        cannot_read = await importer.get("/api/v1/batches")
    async with collector.client(Role.provisioner) as provisioner:
        assert (await provisioner.get("/api/v1/batches")).status_code == 403
    async with collector.client(Role.admin) as admin:
        assert (await admin.put("/api/v1/erp/customers", json=customer)).status_code == 200
        assert (await admin.get("/api/v1/batches")).status_code == 200
        listed = (await admin.get("/api/v1/credentials")).json()
    assert refused.status_code == 403
    assert "needs a credential with role admin or importer" in refused.json()["detail"]
    assert "has role reader" in refused.json()["detail"]
    assert imported.status_code == 200
    assert cannot_read.status_code == 403 and "role admin or reader" in cannot_read.text
    names = {c["name"] for c in listed}
    assert f"test-{collector.settings.collector_id.rsplit('-', 1)[1]}-reader" in names
    assert all("key" not in c and c["key_prefix"].startswith("lt_") for c in listed)


async def test_a_partner_key_is_refused_by_the_trace_routes(
    services: Services, collector: RunningCollector
) -> None:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        await auth.set_partner(c, "P-ROUTES", ["C-ROUTES"], ["0614141000012"])
    issued = await issue(services, Role.partner, "P-ROUTES")
    async with httpx.AsyncClient(base_url=collector.api_url, headers=bearer(issued.key)) as api:
        r = await api.get("/api/v1/lots/anything/trace/forward")
    assert r.status_code == 403 and "has role partner" in r.text


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every route of the app with its dependencies as FastAPI runs them (methods, path,
    dependant), those of included routers too: FastAPI 0.16x keeps an included router as
    one entry of `app.routes`, its routes' router-level dependencies added only on its
    effective routes."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers were kept whole
        yield from (r for r in app.routes if isinstance(r, APIRoute))
        return
    for route in iter_route_contexts(app.routes):
        if getattr(route, "dependant", None) is not None:
            yield route


def test_api_routes_sees_the_included_routers() -> None:
    paths = {r.path for r in api_routes(create_app(CollectorSettings()))}
    assert {"/epcis/events", "/api/v1/credentials", "/api/v1/erp/harvests"} <= paths


def test_every_route_but_healthz_names_its_roles(collector: RunningCollector) -> None:
    """Contract 4: a route added without `require(...)` fails here."""
    unguarded = []
    for route in api_routes(create_app(collector.settings)):
        if route.path in OPEN_ROUTES:
            continue
        pending, guarded = list(route.dependant.dependencies), False
        while pending and not guarded:
            dep = pending.pop()
            guarded = hasattr(dep.call, "required_roles")
            pending.extend(dep.dependencies)
        if not guarded:
            unguarded.append(f"{sorted(route.methods)} {route.path}")
    assert unguarded == [], "routes without auth.require(...): " + ", ".join(unguarded)


def resolution_order(dependant: Dependant) -> list[Any]:
    """The callables FastAPI runs for a route, in its order: each dependency's own
    dependencies first, then the dependency, in declaration order (`dependencies=` of the
    router and the route before the parameters)."""
    order = []
    for dep in dependant.dependencies:
        order += resolution_order(dep)
        order.append(dep.call)
    return order


def test_every_route_checks_the_key_before_it_takes_a_connection(
    collector: RunningCollector,
) -> None:
    """A route that takes a pooled connection before its key is checked lets bogus keys
    hold the pool (endpoints.connection also refuses at run time)."""
    late = []
    for route in api_routes(create_app(collector.settings)):
        order = resolution_order(route.dependant)
        first_check = next(
            (i for i, call in enumerate(order) if hasattr(call, "required_roles")), len(order)
        )
        for taker in (connection, primary_connection):
            if taker in order and order.index(taker) < first_check:
                late.append(f"{sorted(route.methods)} {route.path}")
    assert late == [], "routes taking a connection before checking the key: " + ", ".join(late)


async def test_admin_issues_a_partner_key_over_http(collector: RunningCollector) -> None:
    name, partner = f"dist-{uuid.uuid4().hex[:6]}", f"P-{uuid.uuid4().hex[:6]}"
    body = {
        "name": name,
        "role": "partner",
        "partner_id": partner,
        "customer_ids": ["C-9"],
        "locations": ["urn:epc:id:sgln:0614141.00777.0"],
    }
    async with collector.client(Role.admin) as admin:
        created = await admin.post("/api/v1/credentials", json=body)
        again = await admin.post("/api/v1/credentials", json=body)
        bad_gln = await admin.post(
            "/api/v1/credentials", json={**body, "name": name + "x", "locations": ["0614141000013"]}
        )
    assert created.status_code == 201, created.text
    assert created.json()["key"].startswith("lt_") and created.json()["partner_id"] == partner
    assert again.status_code == 409 and "revoke it first" in again.text
    assert bad_gln.status_code == 422 and "check digit" in bad_gln.text


async def test_partner_sees_exactly_the_lots_shipped_to_its_customers(services: Services) -> None:
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:

        async def lot(code: str) -> int:
            cur = await c.execute(
                "insert into lots (gtin, lot_code) values ('09506000134352', %s) returning lot_id",
                (f"{code}-{tag}",),
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        a, b, cc, d, e, f = [await lot(x) for x in ("A", "B", "C", "D", "E", "F")]
        # E is made from A: a descendant of a lot shipped to the partner, not shipped to it.
        await c.execute(
            "insert into lot_links values (%s, %s, %s, %s)", (a, e, "B-" + tag, "x" + tag)
        )
        for customer in ("C1", "C2"):
            await c.execute(
                "insert into customers values (%s, %s)", (f"{customer}-{tag}", customer)
            )
        for shipment, customer in [("S1", "C1"), ("S2", "C2"), ("S3", "C1"), ("S4", None)]:
            await c.execute(
                "insert into shipments (shipment, customer_id) values (%s, %s)",
                (f"{shipment}-{tag}", customer and f"{customer}-{tag}"),
            )
        await auth.set_partner(c, f"P1-{tag}", [f"C1-{tag}"])
        await auth.set_partner(c, f"P2-{tag}", [f"C2-{tag}", f"C-none-{tag}"])
        await auth.set_partner(c, f"P3-{tag}")
        # Our shipping event (an edge's), and shipping events partners captured themselves.
        for event, partner in [("ev", None), ("p1", "P1"), ("p2", "P2")]:
            await c.execute(
                "insert into trace_events (event_id, event_type, event_time, biz_step,"
                " read_point, body, partner_id)"
                " values (%s, 'ObjectEvent', %s, 'shipping', 'dock-2', '{}', %s)",
                (f"{event}-{tag}", now, partner and f"{partner}-{tag}"),
            )
        lines = [
            ("ev", a, "S1"),
            ("ev", a, "S1"),  # the same lot twice on a shipment: once in the answer
            ("ev", None, "S1"),  # a unit of no known lot yet
            ("ev", b, "S2"),
            ("ev", cc, "S3"),
            ("ev", d, "S4"),  # no customer known
            ("ev", e, "S2"),
            ("ev", f, "S-unknown"),  # a shipment the ERP never heard of
            # A partner naming our lots in shipments of its own, even under the id of one
            # of our shipments to it: never makes them its to see.
            ("p1", b, "S1"),
            ("p1", d, "S3"),
            ("p2", d, "S2"),
            ("nowhere", d, "S1"),  # a line of no event we recorded
        ]
        for position, (event, lot_id, shipment) in enumerate(lines):
            await c.execute(
                "insert into shipment_lines (event_id, position, lot_id, shipment, time)"
                " values (%s, %s, %s, %s, %s)",
                (f"{event}-{tag}", position, lot_id, f"{shipment}-{tag}", now),
            )
        seen = {
            p: [x.lot_id for x in await auth.visible_lots(c, f"{p}-{tag}")]
            for p in ("P1", "P2", "P3")
        }
    assert sorted(seen["P1"]) == sorted([a, cc])
    assert sorted(seen["P2"]) == sorted([b, e])
    assert seen["P3"] == []


@pytest.mark.parametrize(
    ("location", "allowed"),
    [
        ("0614141000012", True),  # its GLN
        ("urn:epc:id:sgln:0614141.00001.0", True),  # the same GLN as an SGLN
        ("urn:epc:id:sgln:0614141.00001.dock-3", True),  # a sub-location of it
        ("https://id.gs1.org/414/0614141000012/254/7", True),  # as a Digital Link
        ("/414/0614141000012/254/7", True),  # a Digital Link without its host
        ("414/0614141007773/254/6", False),
        ("urn:epc:id:sgln:0614141.00777.5", True),  # the one sub-location it has there
        ("urn:epc:id:sgln:0614141.00777.6", False),  # not that one
        ("0614141007773", False),  # nor the whole of that GLN
        ("DIST-DOCK-1", True),  # a read point id, exactly
        ("dist-dock-1", False),
        ("urn:epc:id:sgln:9999999.00001.0", False),
        ("", False),
        (None, False),
    ],
)
def test_partner_captures_only_at_its_locations(location: str | None, allowed: bool) -> None:
    partner = Partner(
        "P", frozenset(), ("0614141000012", "urn:epc:id:sgln:0614141.00777.5", "DIST-DOCK-1")
    )
    assert partner.may_capture_at(location) is allowed


def test_an_event_needs_every_location_it_names_to_be_the_partners() -> None:
    partner = Partner("P", frozenset(), ("0614141000012",))
    ours, theirs = "urn:epc:id:sgln:0614141.00001.1", "urn:epc:id:sgln:9999999.00001.0"
    assert partner.may_capture_event(ours, None)
    assert partner.may_capture_event(ours, ours)
    assert not partner.may_capture_event(ours, theirs)
    assert not partner.may_capture_event(None, None)


async def test_tracectl_credential_add_list_revoke(
    services: Services,
    collector: RunningCollector,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRACE_DATABASE_URL", services.database_url)
    name = f"cli-{uuid.uuid4().hex[:6]}"

    async def run(*argv: str) -> tuple[int, str, str]:
        try:
            await asyncio.to_thread(tracectl, ["credential", *argv])
            code = 0
        except SystemExit as exit:
            code = int(exit.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    code, key, err = await run("add", name, "--role", "reader")
    key = key.strip()
    assert code == 0 and key.startswith("lt_") and "shown only once" in err
    assert (await run("add", name, "--role", "reader"))[0] == 1
    code, listing, _ = await run("list")
    assert code == 0 and any(
        x.split()[:3] == [name, "reader", key[:10] + "…"] for x in listing.splitlines()
    )
    async with httpx.AsyncClient(base_url=collector.api_url, headers=bearer(key)) as api:
        assert (await api.get("/api/v1/batches")).status_code == 200
        code, out, _ = await run("revoke", name)
        assert code == 0 and "revoked" in out
        revoked_at = time.monotonic()

        async def refused() -> bool:
            return (await api.get("/api/v1/batches")).status_code == 401

        # Revoked in another process: this API stops taking it within its key cache time.
        await until(refused, collector.settings.api_key_cache_s + 1, "the revoked key refused")
        assert time.monotonic() - revoked_at <= collector.settings.api_key_cache_s + 1
    assert name not in (await run("list"))[1]
    assert name in (await run("list", "--revoked"))[1]
    code, _, err = await run("revoke", name)
    assert code == 1 and "no credential named" in err
    code, _, err = await run("add", name, "--role", "partner")
    assert code == 1 and "needs a partner id" in err
    code, out, _ = await run(
        "add", name, "--role", "partner", "--partner", f"P-{name}", "--location", "0614141000012"
    )
    assert code == 0
    assert "locations 0614141000012" in (await run("list"))[1]


async def test_a_partner_key_brings_its_partner_and_use_is_recorded(services: Services) -> None:
    partner = f"P-{uuid.uuid4().hex[:6]}"
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        await auth.set_partner(c, partner, ["C-1", "C-2"], ["0614141000012"])
        issued = await auth.issue(c, f"t-{partner}", Role.partner, partner)
        principal = await auth.authenticate(c, issued.key)
        listed = {x.name: x for x in await auth.list_credentials(c)}
    assert principal is not None and principal.role is Role.partner
    assert principal.partner == Partner(partner, frozenset({"C-1", "C-2"}), ("0614141000012",))
    assert listed[issued.name].last_used_at is not None
