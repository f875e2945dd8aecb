"""Readings retention (cloud_collector/retention.py): old chunks of `readings` go, while the
rollups, batches and genealogy a trace needs stay and answer for the old batch; one
collector of a group drops at a time; the collector's process runs it and /healthz shows it.

On a database of its own: dropping every chunk older than 30 days of the shared test
database would take other tests' readings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from cloud_collector import __main__ as collector_main
from cloud_collector import queries, retention, trace
from cloud_collector.ingest import ingest
from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings
from protocols.mqtt import topics
from tests.conftest import TEST_DB, Services, free_port, until

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=400)  # a year ago and more: its chunk goes at 30 days
RECENT = NOW - timedelta(hours=1)
GTIN = "09506000134383"


@pytest.fixture
async def retention_db(services: Services) -> AsyncIterator[str]:
    name = f"{TEST_DB}_retention"
    admin = services.database_url.rsplit("/", 1)[0] + "/postgres"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f"drop database if exists {name} with (force)")
        await conn.execute(f"create database {name}")
    url = services.database_url.rsplit("/", 1)[0] + "/" + name
    await asyncio.to_thread(migrate, url)
    yield url
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f"drop database if exists {name} with (force)")


class Line:
    """An edge of one line, sending what a batch leaves behind: its start and end, the lot it
    made, and readings."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn
        self.edge = f"edge-{uuid.uuid4().hex[:6]}"
        self.seq = {"events": 0, "readings": 0}

    async def send(self, stream: str, records: list[dict]) -> None:
        for r in records:
            r["seq"] = self.seq[stream]
            self.seq[stream] += 1
        payload = {"edge_id": self.edge, "stream": stream, "epoch": "e", "records": records}
        outcome = await ingest(
            self.conn, topics.data(self.edge, stream), json.dumps(payload).encode()
        )
        assert outcome.ack is not None, outcome.reason

    async def batch(self, batch: str, lot: str, start: datetime, values: list[float]) -> None:
        def event(kind: str, at: datetime) -> dict:
            return {"kind": kind, "time": at.isoformat(), "line": "line-1", "batch": batch}

        output = {
            "epc_class": f"https://id.gs1.org/01/{GTIN}/10/{lot}",
            "gtin": GTIN,
            "lot": lot,
            "quantity": 10,
            "uom": "EA",
        }
        made = {
            **event("transformation_event", start + timedelta(minutes=30)),
            "event_id": f"{self.edge}-{batch}",
            "transformation_id": batch,
            "read_point": "line-1",
            "inputs": [],
            "outputs": [output],
        }
        await self.send(
            "events",
            [
                {**event("batch_started", start), "by": "op"},
                made,
                {**event("batch_ended", start + timedelta(minutes=40)), "by": "op"},
            ],
        )
        await self.send(
            "readings",
            [
                {
                    "kind": "reading",
                    "time": (start + timedelta(seconds=10 * i)).isoformat(),
                    "line": "line-1",
                    "batch": batch,
                    "device": "oven",
                    "tag": "temperature",
                    "value": value,
                    "unit": "Cel",
                }
                for i, value in enumerate(values)
            ],
        )


async def _one(conn: psycopg.AsyncConnection, sql: str, *params: object) -> object:
    row = await (await conn.execute(sql, params)).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0] if len(row) == 1 else tuple(row)


async def test_old_chunks_go_while_rollups_batches_and_genealogy_answer_for_the_old_batch(
    retention_db: str,
) -> None:
    old_values = [float(v) for v in range(10, 210)]  # 200 readings over 33 minutes
    async with await psycopg.AsyncConnection.connect(retention_db, autocommit=True) as conn:
        line = Line(conn)
        await line.batch("OLD", "LOT-OLD", OLD, old_values)
        await line.batch("NEW", "LOT-NEW", RECENT, [1.0] * 100)
        stats_before = await _one(
            conn, "select count, min, max, sum from batch_tag_stats where batch_id = 'OLD'"
        )
        minutes_before = await _one(
            conn, "select count(*) from batch_tag_minutes where batch_id = 'OLD'"
        )
        chunks_before = await _one(conn, "select count(*) from show_chunks('readings')")
        # Ingest keeps no percentiles: the round must compute them before the readings go.
        assert await _one(conn, "select count(*) from batch_tag_percentiles") == 0

        done = await retention.run_once(conn, 30, "collector-a")

        assert done is not None and done.chunks >= 1 and done.percentiles_computed == 1
        assert done.dropped_before is not None
        assert OLD < done.dropped_before <= NOW - timedelta(days=30)
        assert await _one(conn, "select count(*) from show_chunks('readings')") == (
            chunks_before - done.chunks
        )
        assert await _one(conn, "select count(*) from readings where batch_id = 'OLD'") == 0
        assert await _one(conn, "select count(*) from readings where batch_id = 'NEW'") == 100
        # What traces and summaries answer from is all there.
        assert (
            await _one(
                conn, "select count, min, max, sum from batch_tag_stats where batch_id = 'OLD'"
            )
            == stats_before
        )
        assert await _one(
            conn, "select count(*) from batch_tag_minutes where batch_id = 'OLD'"
        ) == (minutes_before)
        assert await _one(
            conn, "select at_count, p50 from batch_tag_percentiles where batch_id = 'OLD'"
        ) == (200, 109.5)
        assert await _one(conn, "select count(*) from batches where batch_id = 'OLD'") == 1
        assert await _one(conn, "select count(*) from batch_outputs where batch_id = 'OLD'") == 1
        assert await _one(
            conn, "select dropped_before, chunks, keep_days, collector from readings_retention"
        ) == (done.dropped_before, done.chunks, 30.0, "collector-a")

        # The old batch's trace and summary still answer, from the rollups.
        lot = await trace.resolve(conn, f"01/{GTIN}/10/LOT-OLD")
        backward = await trace.trace(conn, lot, "backward")
        [old] = backward.batches
        [temperature] = old.parameters
        assert (temperature.count, temperature.min, temperature.max) == (200, 10.0, 209.0)
        assert temperature.p50 == 109.5 and temperature.mean == pytest.approx(109.5)
        assert "batch OLD has no readings" not in backward.gaps
        batch = await queries.get_batch(conn, "OLD")
        assert batch is not None
        summary = await queries.batch_parameters(conn, batch, points=100)
        assert [t.count for t in summary.tags] == [200]
        [series] = summary.series
        assert series.bucket_s >= 60 and sum(x.count for x in series.points) == 200
        assert any("removed by readings retention" in g for g in summary.gaps), summary.gaps
        # A recall by condition reaching before the cut says its readings are gone.
        window = trace.Condition.model_validate(
            {
                "tag": "temperature",
                "condition": "above",
                "limit": 100,
                "from": OLD - timedelta(days=1),
                "to": OLD + timedelta(days=1),
            }
        )
        recall = await trace.recall_by_condition(conn, window)
        assert recall.batches == []
        assert any("removed by readings retention" in g for g in recall.gaps), recall.gaps
        new = await queries.get_batch(conn, "NEW")
        assert new is not None
        assert (await queries.batch_parameters(conn, new)).gaps == []

        # Nothing more to drop: a second round drops nothing and records nothing.
        again = await retention.run_once(conn, 30, "collector-a")
        assert again is not None and again.chunks == 0
        assert await _one(conn, "select count(*) from readings_retention") == 1


async def test_one_collector_of_a_group_drops_at_a_time(retention_db: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(retention_db, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(retention_db, autocommit=True) as other,
    ):
        await Line(conn).batch("OLD", "LOT-OLD", OLD, [1.0, 2.0])
        await other.execute("select pg_advisory_lock(%s)", (retention._LOCK_KEY,))
        assert await retention.run_once(conn, 30, "collector-b") is None
        assert await _one(conn, "select count(*) from readings") == 2
        await other.execute("select pg_advisory_unlock(%s)", (retention._LOCK_KEY,))
        done = await retention.run_once(conn, 30, "collector-b")
        assert done is not None and done.chunks == 1


async def test_a_drop_waits_for_a_reader_of_the_chunk_at_most_its_lock_timeout(
    retention_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long query reading the old chunk holds the drop off; the round fails after the
    lock timeout (and is tried again later) instead of queueing ingest behind it."""
    monkeypatch.setattr(retention, "LOCK_TIMEOUT", "300ms")
    async with (
        await psycopg.AsyncConnection.connect(retention_db, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(retention_db) as reader,
    ):
        await Line(conn).batch("OLD", "LOT-OLD", OLD, [1.0, 2.0])
        await reader.execute("select count(*) from readings where time < now() - interval '1 year'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await retention.run_once(conn, 30, "collector-c")
        await reader.rollback()
        assert await _one(conn, "select count(*) from readings_retention") == 0
        done = await retention.run_once(conn, 30, "collector-c")
        assert done is not None and done.chunks == 1


async def test_the_collector_runs_retention_and_healthz_shows_it(
    retention_db: str,
    services: Services,
    collector_settings: CollectorSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with await psycopg.AsyncConnection.connect(retention_db, autocommit=True) as conn:
        await Line(conn).batch("OLD", "LOT-OLD", OLD, [1.0, 2.0])

    async def no_consumer(*args: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(collector_main, "run_consumer", no_consumer)
    settings = collector_settings.model_copy(
        update={
            "database_url": retention_db,
            "api_port": free_port(),
            "readings_retention_days": 30.0,
        }
    )
    serving = asyncio.create_task(collector_main.serve(settings))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api_port}") as http:
            body = await until(lambda: _retention_ran(http), 30, "/healthz showing a drop")
        assert body["retention"]["keep_days"] == 30.0
        assert body["retention"]["last_error"] is None
        assert body["retention"]["last_dropped_before"] is not None
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    async with await psycopg.AsyncConnection.connect(retention_db) as conn:
        assert await _one(conn, "select count(*) from readings") == 0
        assert await _one(conn, "select collector from readings_retention") == settings.collector_id


async def _retention_ran(http: httpx.AsyncClient) -> dict | None:
    try:
        body = (await http.get("/healthz")).json()
    except httpx.TransportError:
        return None
    retention_state = body.get("retention")
    return body if retention_state and retention_state["chunks_dropped"] >= 1 else None


def test_retention_is_off_unless_set_and_refuses_less_than_a_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRACE_READINGS_RETENTION_DAYS", raising=False)
    assert CollectorSettings().readings_retention_days is None
    monkeypatch.setenv("TRACE_READINGS_RETENTION_DAYS", "0.5")
    with pytest.raises(ValueError, match="readings_retention_days"):
        CollectorSettings()
    monkeypatch.setenv("TRACE_READINGS_RETENTION_DAYS", "90")
    assert CollectorSettings().readings_retention_days == 90.0
