"""The API's reads from a streaming-replication standby (deploy/services.sh standby up,
TRACE_READ_DATABASE_URL): GET routes are answered by the standby while ingest writes to the
primary; writes, API keys and a capture job's status stay on the primary; /healthz says how
far the standby lags; a standby that is away keeps neither the API nor its writes down."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from cloud_collector import auth, queries, trace
from cloud_collector.api import create_app
from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from cloud_collector.migrate import available
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from tests.cloud_collector.epcis.documents import epcis_document, object_event, unique_sgtin
from tests.cloud_collector.plant import (  # noqa: F401  (bakery: a fixture)
    DOUGH_GTIN,
    FLOUR_GTIN,
    Plant,
    bakery,
    erp,
)
from tests.cloud_collector.test_http_limits import serving
from tests.conftest import ROOT, TEST_DB, RunningCollector, Services, free_port, until


@pytest.fixture(scope="module")
async def standby_url(services: Services) -> str:
    """The test database on the standby that `deploy/services.sh standby up` starts (or finds
    running), once the standby has replayed its creation and its schema."""
    proc = await asyncio.to_thread(
        subprocess.run,
        ["bash", str(ROOT / "deploy" / "services.sh"), "standby", "up"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"deploy/services.sh standby up failed:\n{proc.stderr}"
    found = re.search(r"^export TRACE_READ_DATABASE_URL=(\S+)$", proc.stdout, re.MULTILINE)
    assert found, proc.stdout
    url = found.group(1).rsplit("/", 1)[0] + "/" + TEST_DB
    newest = available()[-1].version

    async def replayed() -> bool:
        try:
            async with await psycopg.AsyncConnection.connect(url, connect_timeout=2) as conn:
                cur = await conn.execute(
                    "select 1 from schema_migrations where version = %s", (newest,)
                )
                return await cur.fetchone() is not None
        except psycopg.Error:
            return False

    await until(replayed, 60, "the standby replaying the test database")
    return url


@asynccontextmanager
async def standby_api(
    collector: RunningCollector, read_url: str
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The API with its reads on `read_url`, its writes and keys on the test database."""
    settings = collector.settings.model_copy(
        update={"read_database_url": read_url, "api_port": free_port()}
    )
    app = create_app(settings)
    async with serving(settings, app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield app, http


@asynccontextmanager
async def replay_paused(standby: str) -> AsyncIterator[None]:
    """The standby receives WAL but applies none of it: what the primary commits meanwhile
    is invisible there until the block ends."""
    async with await psycopg.AsyncConnection.connect(standby, autocommit=True) as conn:
        await conn.execute("select pg_wal_replay_pause()")
        try:
            yield
        finally:
            await conn.execute("select pg_wal_replay_resume()")


def reading(seq: int, batch: str, value: float) -> dict:
    return {
        "kind": "reading",
        "seq": seq,
        "time": (datetime.now(UTC) - timedelta(minutes=30) + timedelta(seconds=seq)).isoformat(),
        "line": "line-1",
        "batch": batch,
        "device": "oven",
        "tag": "temperature",
        "value": value,
        "unit": "Cel",
    }


async def ingest_readings(url: str, edge: str, batch: str, seqs: range) -> None:
    """Readings of `batch` committed on the primary, 100 to a message, as the consumer would."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for start in range(seqs.start, seqs.stop, 100):
            records = [reading(n, batch, 150.0 + n % 50) for n in range(start, start + 100)]
            payload = json.dumps(
                {"edge_id": edge, "stream": "readings", "epoch": "e", "records": records}
            ).encode()
            outcome = await ingest(conn, topics.data(edge, "readings"), payload)
            assert outcome.ack is not None, outcome.reason


async def readings_counted(http: httpx.AsyncClient, batch: str) -> int:
    r = await http.get(f"/api/v1/batches/{batch}/parameters", params={"points": 0})
    if r.status_code == 404:
        return -1  # not replayed yet
    assert r.status_code == 200, r.text
    return sum(t["count"] for t in r.json()["tags"])


async def counted(http: httpx.AsyncClient, batch: str, wanted: int) -> bool:
    return await readings_counted(http, batch) == wanted


async def test_traces_are_answered_by_the_standby_while_ingest_writes_to_the_primary(
    bakery: Plant,  # noqa: F811
    collector: RunningCollector,
    services: Services,
    standby_url: str,
) -> None:
    p = bakery
    await erp(collector, p)
    batch = f"B1-{p.tag}"
    headers = collector.headers(Role.reader)
    async with standby_api(collector, standby_url) as (app, http):
        http.headers.update(headers)
        async with app.state.read_pool.connection() as conn:
            assert await (await conn.execute("select pg_is_in_recovery()")).fetchone() == (True,)
        async with app.state.write_pool.connection() as conn:
            assert await (await conn.execute("select pg_is_in_recovery()")).fetchone() == (False,)

        flour = f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}"
        # Ingest on the primary, 2,000 readings, while traces are asked of the standby.
        writing = asyncio.create_task(
            ingest_readings(services.database_url, p.edge, batch, range(2000))
        )
        answered = 0
        while not writing.done():
            r = await http.get(f"/api/v1/lots/{flour}/trace/forward")
            if r.status_code == 200:
                answered += 1
                assert {x["lot_code"] for x in r.json()["lots"]} >= {p.lot("BREAD")}
            await asyncio.sleep(0.05)
        await writing
        assert answered > 0, "no trace was answered while ingest ran"
        await until(lambda: counted(http, batch, 2000), 30, "2,000 readings replayed")
        body = (await http.get(f"/api/v1/batches/{batch}/parameters")).json()
        [tag] = body["tags"]
        # Percentiles the standby cannot store are computed for the answer, from every reading.
        assert tag["p50"] is not None and tag["min"] == 150.0 and tag["max"] == 199.0
        dough = f"01/{DOUGH_GTIN}/10/{p.lot('DOUGH')}"
        backward = await http.get(f"/api/v1/lots/{dough}/trace/backward")
        assert backward.status_code == 200
        [b1] = [b for b in backward.json()["batches"] if b["batch"]["batch_id"] == batch]
        assert b1["parameters"][0]["count"] == 2000
        recall = await http.get(f"/api/v1/lots/{flour}/recall")
        assert recall.status_code == 200 and recall.json()["affected_lots"] == 4
        recall_csv = await http.get(f"/api/v1/lots/{flour}/recall", params={"format": "csv"})
        assert recall_csv.status_code == 200 and p.lot("CAKE") in recall_csv.text

        # Served by the standby, not the primary: with its replay paused, what the primary
        # commits is not in the answer until the standby applies it.
        async with replay_paused(standby_url):
            await ingest_readings(services.database_url, p.edge, batch, range(2000, 2100))
            async with await psycopg.AsyncConnection.connect(services.database_url) as primary:
                cur = await primary.execute(
                    "select count(*) from readings where batch_id = %s", (batch,)
                )
                assert await cur.fetchone() == (2100,)
            assert await readings_counted(http, batch) == 2000
        await until(lambda: counted(http, batch, 2100), 30, "the 100 more replayed")
    async with await psycopg.AsyncConnection.connect(services.database_url) as primary:
        cur = await primary.execute(
            "select count(*) from batch_tag_percentiles where batch_id = %s", (batch,)
        )
        # Nothing was stored by the reads: the percentiles were never written anywhere.
        assert await cur.fetchone() == (0,)


async def test_writes_keys_and_a_capture_job_stay_on_the_primary_while_the_standby_lags(
    collector: RunningCollector, services: Services, standby_url: str
) -> None:
    """With the standby's replay paused: an import and a capture are written to the primary
    and the capture's job is found at once (read from the primary); a key issued and one
    revoked on the primary count at once (keys are checked on the primary)."""
    tag = uuid.uuid4().hex[:6]
    async with (
        standby_api(collector, standby_url) as (app, http),
        await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as primary,
        await psycopg.AsyncConnection.connect(standby_url, autocommit=True) as standby,
    ):
        old = await auth.issue(primary, f"standby-old-{tag}", Role.admin)
        assert (await http.get("/api/v1/batches", headers=_bearer(old.key))).status_code == 200
        async with replay_paused(standby_url):
            new = await auth.issue(primary, f"standby-new-{tag}", Role.admin)
            await auth.revoke(primary, f"standby-old-{tag}")
            app.state.keyring.forget()
            admin = _bearer(new.key)
            imported = await http.put(
                "/api/v1/erp/customers",
                json=[{"customer_id": f"C-{tag}", "name": "Replica Foods"}],
                headers=admin,
            )
            assert imported.status_code == 200, imported.text
            assert await _customer_on(primary, f"C-{tag}")
            assert not await _customer_on(standby, f"C-{tag}")
            captured = await http.post(
                "/epcis/capture", json=epcis_document(object_event(unique_sgtin())), headers=admin
            )
            assert captured.status_code == 202, captured.text
            job = await http.get(captured.headers["Location"], headers=admin)
            assert job.status_code == 200 and job.json()["success"] is True
            revoked = await http.get("/api/v1/batches", headers=_bearer(old.key))
            assert revoked.status_code == 401
        await until(lambda: _customer_on(standby, f"C-{tag}"), 30, "the import replayed")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _customer_on(conn: psycopg.AsyncConnection, customer_id: str) -> bool:
    cur = await conn.execute("select 1 from customers where customer_id = %s", (customer_id,))
    return await cur.fetchone() is not None


async def test_healthz_reports_the_standby_and_its_delay(
    collector: RunningCollector, standby_url: str
) -> None:
    async with standby_api(collector, standby_url) as (_, http):
        body = (await http.get("/healthz")).json()
        async with replay_paused(standby_url):
            # A commit on the primary the standby receives but does not apply.
            async with await psycopg.AsyncConnection.connect(
                collector.settings.database_url, autocommit=True
            ) as primary:
                await primary.execute("select pg_sleep(1.1)")
                await auth.issue(primary, f"lag-{uuid.uuid4().hex[:6]}", Role.reader)
            await asyncio.sleep(1.0)
            lagging = (await http.get("/healthz")).json()
    assert body["status"] == "ok", body
    assert body["reads"]["reachable"] is True and body["reads"]["standby"] is True
    assert lagging["reads"]["replay_delay_s"] > 0.5, lagging["reads"]


async def test_a_standby_that_is_away_keeps_neither_the_api_nor_its_writes_down(
    collector: RunningCollector,
) -> None:
    nowhere = f"postgresql://trace@127.0.0.1:{free_port()}/{TEST_DB}"
    tag = uuid.uuid4().hex[:6]
    async with standby_api(collector, nowhere) as (_, http):
        health = await http.get("/healthz")
        imported = await http.put(
            "/api/v1/erp/customers",
            json=[{"customer_id": f"C-{tag}", "name": "Still Writing"}],
            headers=collector.headers(Role.importer),
        )
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert health.json()["reads"]["reachable"] is False
    assert imported.status_code == 200, imported.text


def test_the_read_url_defaults_to_the_primary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACE_READ_DATABASE_URL", raising=False)
    primary = "postgresql://trace@db.example:5432/traceability"
    settings = CollectorSettings(database_url=primary)
    assert settings.reads_url == primary
    standby = "postgresql://trace@replica.example:5432/traceability"
    assert settings.model_copy(update={"read_database_url": standby}).reads_url == standby


async def test_a_recall_and_a_summary_read_only_equal_those_on_the_primary(
    bakery: Plant,  # noqa: F811
    services: Services,
) -> None:
    """Where no table may be created nor a percentile kept (a standby, the API's read
    pool), the recall walks with the ids as an array and the summary computes percentiles
    in the query: the same answers, line for line."""
    p = bakery
    batch = f"B1-{p.tag}"
    await ingest_readings(services.database_url, p.edge, batch, range(300))
    flour = f"01/{FLOUR_GTIN}/10/{p.lot('FLOUR')}"
    read_only = "-c default_transaction_read_only=on"
    async with (
        await psycopg.AsyncConnection.connect(services.database_url, options=read_only) as ro,
        await psycopg.AsyncConnection.connect(services.database_url) as rw,
    ):
        assert not queries.writable(ro) and queries.writable(rw)
        lot = await trace.resolve(ro, flour)
        csv_ro = b"".join([block async for block in trace.recall_csv(ro, lot)])
        csv_rw = b"".join([block async for block in trace.recall_csv(rw, lot)])
        assert await trace.recall(ro, lot) == await trace.recall(rw, lot)
        assert csv_ro == csv_rw and p.lot("CAKE").encode() in csv_ro
        computed = await queries.summaries(ro, [batch])
        stored = await queries.summaries(rw, [batch])  # computes and keeps them
        kept = await queries.summaries(ro, [batch])  # reads the kept ones
    assert computed == stored == kept
    assert computed[batch][0][0].p50 is not None
