"""Per-batch rollups kept at ingest answer exactly what the readings themselves answer:
through resends, late messages, mixed quality and spec limits; percentiles made stale by
late readings are recomputed; long batches chart from whole-minute buckets."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud_collector import queries, rollups
from cloud_collector.ingest import ingest
from protocols.mqtt import topics
from tests.cloud_collector.test_ingest import T0, envelope, reading
from tests.conftest import Services

# The same statistics straight from the readings: what the rollups must reproduce.
_FROM_READINGS = """
select device, tag, count(*) as count,
       count(*) filter (where quality = 'good' and value is not null) as good_count,
       count(*) filter (where quality = 'bad') as bad_count,
       count(*) filter (where quality = 'uncertain') as uncertain_count,
       min(value) filter (where quality = 'good') as min,
       max(value) filter (where quality = 'good') as max,
       avg(value) filter (where quality = 'good') as mean,
       percentile_cont(0.05) within group (order by value) filter (where quality = 'good') as p05,
       percentile_cont(0.5) within group (order by value) filter (where quality = 'good') as p50,
       percentile_cont(0.95) within group (order by value) filter (where quality = 'good') as p95,
       min(time) as first_time, max(time) as last_time
from readings where batch_id = %s group by device, tag order by device, tag
"""


@pytest.fixture
async def conn(services: Services) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        yield c


async def expected(conn: psycopg.AsyncConnection, batch: str) -> list[dict]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return await (await cur.execute(_FROM_READINGS, (batch,))).fetchall()


def as_compared(summary: queries.TagSummary) -> dict:
    row = summary.model_dump(exclude={"unit", "low", "high"})
    row["mean"] = pytest.approx(row["mean"]) if row["mean"] is not None else None
    return row


async def parameters(conn: psycopg.AsyncConnection, batch: str) -> queries.BatchParameters:
    found = await queries.get_batch(conn, batch)
    assert found is not None
    return await queries.batch_parameters(conn, found, points=10)


async def test_rollups_equal_the_readings_through_resends_and_late_messages(conn) -> None:
    edge, batch = f"edge-{uuid.uuid4().hex[:8]}", f"B-{uuid.uuid4().hex[:6]}"
    topic = topics.data(edge, "readings")
    rng = random.Random(7)
    records = []
    for seq in range(300):
        quality = rng.choice(["good"] * 8 + ["bad", "uncertain"])
        value = None if quality == "bad" else round(rng.uniform(60, 90), 2)
        tag = "temperature" if seq % 3 else "pressure"
        records.append(reading(seq, value, batch, quality=quality, tag=tag))
    await ingest(
        conn,
        topics.data(edge, "events"),
        envelope(
            edge,
            [
                {
                    "kind": "tag_specs",
                    "seq": 0,
                    "time": T0.isoformat(),
                    "specs": [
                        {
                            "device": "dev-1",
                            "tag": "temperature",
                            "unit": "Cel",
                            "low": 65,
                            "high": 85,
                        }
                    ],
                }
            ],
            stream="events",
        ),
    )
    # Out of order, with a message committed twice and one regrouped across others.
    for first, last in [(0, 99), (200, 299), (0, 99), (50, 149), (100, 199)]:
        await ingest(conn, topic, envelope(edge, records[first : last + 1]))
    assert [as_compared(t) for t in (await parameters(conn, batch)).tags] == [
        {**r, "mean": pytest.approx(r["mean"])} for r in await expected(conn, batch)
    ]
    [excursion] = (await parameters(conn, batch)).excursions
    stored = [r for r in records if r["tag"] == "temperature" and r.get("quality") == "good"]
    assert (excursion.tag, excursion.low, excursion.high) == ("temperature", 65, 85)
    assert excursion.below == sum(r["value"] < 65 for r in stored)
    assert excursion.above == sum(r["value"] > 85 for r in stored)
    assert excursion.max == max(r["value"] for r in stored)

    # A late reading after the percentiles were computed makes them stale: recomputed.
    await ingest(conn, topic, envelope(edge, [reading(300, 1000.0, batch, tag="pressure")]))
    pressure = {t.tag: t for t in (await parameters(conn, batch)).tags}["pressure"]
    want = {r["tag"]: r for r in await expected(conn, batch)}["pressure"]
    assert (pressure.count, pressure.max, pressure.p95) == (want["count"], 1000.0, want["p95"])


async def test_a_long_batch_charts_from_whole_minute_buckets(conn) -> None:
    edge, batch = f"edge-{uuid.uuid4().hex[:8]}", f"B-{uuid.uuid4().hex[:6]}"
    # Six hours, a reading every 20 s: 10 points per tag need 36-minute buckets.
    records = [
        {
            **reading(seq, float(seq % 50), batch),
            "time": (T0 + timedelta(seconds=20 * seq)).isoformat(),
        }
        for seq in range(1080)
    ]
    await ingest(conn, topics.data(edge, "readings"), envelope(edge, records))
    [series] = (await parameters(conn, batch)).series
    assert series.bucket_s == 36 * 60
    assert sum(p.count for p in series.points) == 1080
    assert [p.time for p in series.points][:2] == [T0, T0 + timedelta(minutes=36)]
    first = [r["value"] for r in records[:108]]  # 36 minutes of readings
    assert series.points[0].mean == pytest.approx(sum(first) / len(first))
    assert (series.points[0].min, series.points[0].max) == (min(first), max(first))


async def test_ended_batches_get_their_percentiles_in_the_background(conn) -> None:
    edge, batch = f"edge-{uuid.uuid4().hex[:8]}", f"B-{uuid.uuid4().hex[:6]}"
    records = [reading(seq, float(seq), batch) for seq in range(21)]
    await ingest(conn, topics.data(edge, "readings"), envelope(edge, records))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    ended = {
        "kind": "batch_ended",
        "seq": 0,
        "time": an_hour_ago.isoformat(),
        "line": "line-1",
        "batch": batch,
        "by": "op-1",
    }
    await ingest(conn, topics.data(edge, "events"), envelope(edge, [ended], stream="events"))

    async def stored() -> tuple | None:
        cur = await conn.execute(
            "select at_count, p50 from batch_tag_percentiles where batch_id = %s", (batch,)
        )
        return await cur.fetchone()

    # Ended an hour ago: settled after 30 s, not yet if it took a day to settle.
    assert batch not in await rollups.refresh_ended(conn, settle=timedelta(days=1))
    assert await stored() is None
    assert batch in await rollups.refresh_ended(conn, settle=timedelta(seconds=30))
    assert await stored() == (21, 10.0)
    assert batch not in await rollups.refresh_ended(conn, settle=timedelta(seconds=30))
