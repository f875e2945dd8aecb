"""Alert rules raise alerts from real data: readings out of spec published by an edge over
the broker to the running collector, QC results imported through its API, edge statuses as
the keeper stores them, sequence gaps left by ingest. Each alert is raised once per
occurrence; a condition that ends clears its alert, and the next occurrence is a new one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import psycopg
import pytest

from cloud_collector import edge_status
from cloud_collector.alerts import evaluator
from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from protocols.mqtt import topics
from protocols.mqtt.contract import EdgeStatus
from tests.cloud_collector.test_ingest import T0, envelope, reading
from tests.conftest import RunningCollector, Services, until


@pytest.fixture
async def conn(services: Services) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def rule(collector: RunningCollector, condition: dict) -> AsyncIterator[dict]:
    """A rule made through the API (admin), deleted afterwards."""
    async with collector.client(Role.admin) as api:
        made = await api.post(
            "/api/v1/alert-rules", json={"name": unique("rule"), "condition": condition}
        )
        assert made.status_code == 201, made.text
        try:
            yield made.json()
        finally:
            await api.delete(f"/api/v1/alert-rules/{made.json()['rule_id']}")


async def alerts(collector: RunningCollector, **params: str) -> list[dict]:
    async with collector.client(Role.reader) as api:
        answer = await api.get("/api/v1/alerts", params=params)
    assert answer.status_code == 200, answer.text
    found: list[dict] = answer.json()
    return found


async def of_edge(collector: RunningCollector, kind: str, edge: str) -> list[dict]:
    return [a for a in await alerts(collector, kind=kind) if a["source_edge"] == edge]


def spec(device: str, low: float, high: float) -> dict:
    return {
        "kind": "tag_specs",
        "seq": 0,
        "time": T0.isoformat(),
        "specs": [
            {"device": device, "tag": "temperature", "unit": "Cel", "low": low, "high": high}
        ],
    }


async def committed(conn: psycopg.AsyncConnection, edge: str) -> int:
    cur = await conn.execute(
        "select count(*) from readings join edge_streams using (stream_id) where edge_id = %s",
        (edge,),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_an_excursion_in_a_batch_raises_one_alert_per_tag_on_the_rules_lines(
    services: Services, collector: RunningCollector, conn: psycopg.AsyncConnection
) -> None:
    edge, device, line, other_line = unique("edge"), unique("oven"), unique("line"), unique("line")
    batch, other_batch = unique("B"), unique("B")
    broker = await services.register(edge)

    def at(seq: int, value: float, on: str = line, of: str = batch) -> dict:
        return reading(seq, value, of, device=device, line=on)

    async with (
        rule(collector, {"kind": "excursion", "lines": [line]}) as made,
        aiomqtt.Client(
            **broker.client_args(),  # type: ignore[arg-type]
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client,
    ):

        async def publish(stream: str, records: list[dict]) -> None:
            body = envelope(edge, records, stream=stream)
            await client.publish(topics.data(edge, stream), body, qos=1)

        await publish("events", [spec(device, 65, 85)])
        await until(
            lambda: tag_spec_stored(conn, device), 30, "the collector storing the spec limits"
        )
        await publish("readings", [at(0, 70), at(1, 91.5), at(2, 95), at(3, 60)])
        [alert] = await until(lambda: of_batch(collector, batch), 30, "the excursion's alert")
        # More out of spec later, and out of spec on a line the rule does not watch.
        await publish("readings", [at(4, 99), at(5, 50), at(6, 120, other_line, other_batch)])
        await until(lambda: committed_all(conn, edge, 7), 30, "all readings committed")
        assert await of_batch(collector, batch) == [alert]
        assert await of_batch(collector, other_batch) == []
        assert alert["rule_id"] == made["rule_id"]
    assert alert["line_id"] == line
    assert alert["subject"] == f"{batch}/{device}/temperature"
    assert alert["detail"]["low"] == 65 and alert["detail"]["high"] == 85
    assert alert["detail"]["max"] == 95  # what was out when it was raised
    assert alert["event_time"].startswith("2026-11-25T10:00:01")  # the first one out
    assert "out of spec" in alert["summary"]


async def committed_all(conn: psycopg.AsyncConnection, edge: str, count: int) -> bool:
    return await committed(conn, edge) == count


async def tag_spec_stored(conn: psycopg.AsyncConnection, device: str) -> bool:
    cur = await conn.execute("select 1 from tag_specs where device = %s", (device,))
    return await cur.fetchone() is not None


async def of_batch(collector: RunningCollector, batch: str) -> list[dict]:
    return [
        a for a in await alerts(collector, kind="excursion") if a["detail"]["batch_id"] == batch
    ]


async def test_a_failed_qc_check_of_the_rules_kinds_raises_an_alert_while_the_rule_is_on(
    collector: RunningCollector, conn: psycopg.AsyncConnection
) -> None:
    edge, line, batch = unique("edge"), unique("line"), unique("B")
    await ingest(
        conn, topics.data(edge, "readings"), envelope(edge, [reading(0, 1, batch, line=line)])
    )

    def result(check: str, kind: str, passed: bool) -> dict:
        return {
            "batch_id": batch,
            "kind": kind,
            "check_name": check,
            "value": 7.9,
            "unit": "pH",
            "passed": passed,
            "time": "2026-11-25T11:00:00Z",
        }

    async def imported(*rows: dict) -> None:
        async with collector.client(Role.importer) as api:
            answer = await api.post("/api/v1/qc-results", json=list(rows))
        assert answer.status_code == 201, answer.text

    async def raised() -> list[dict]:
        return await alerts(collector, kind="qc_failed", line=line)

    condition = {"kind": "qc_failed", "lines": [line], "checks": ["FQC"]}
    async with rule(collector, condition) as made:
        await imported(
            result("ph", "FQC", passed=False),
            result("brix", "FQC", passed=True),
            result("moisture", "IPQC", passed=False),  # not a kind the rule watches
        )
        [alert] = await raised()
        assert alert["detail"]["check_name"] == "ph"
        assert alert["summary"] == f"FQC check ph failed on batch {batch}: 7.9 pH"
        async with collector.client(Role.admin) as api:
            off = {"name": made["name"], "enabled": False, "condition": condition}
            changed = await api.put(f"/api/v1/alert-rules/{made['rule_id']}", json=off)
            assert changed.status_code == 200, changed.text
        await imported(result("salt", "FQC", passed=False))
        assert await raised() == [alert]


def status(edge: str, state: str = "online", **fields: Any) -> EdgeStatus:
    return EdgeStatus(edge_id=edge, state=state, time=datetime.now(UTC), **fields)  # type: ignore[arg-type]


def device(name: str, connected: bool, offline_for_min: float = 0) -> dict:
    since = datetime.now(UTC) - timedelta(minutes=offline_for_min)
    return {
        "device": name,
        "station": "line-1",
        "connected": connected,
        **({} if connected else {"offline_since": since.isoformat()}),
    }


async def test_a_device_offline_longer_than_n_minutes_raises_once_and_clears_when_back(
    collector: RunningCollector, conn: psycopg.AsyncConnection
) -> None:
    edge = unique("edge")

    async def stored(**fields: Any) -> None:
        assert await edge_status.store(conn, status(edge, **fields), retained=False)

    async def raised() -> list[dict]:
        await evaluator.evaluate(conn)
        return sorted(await of_edge(collector, "device_offline", edge), key=lambda a: a["alert_id"])

    condition: dict[str, Any] = {"kind": "device_offline", "minutes": 5, "edges": [edge]}
    async with rule(collector, condition) as made:
        await stored(
            interval_s=60,
            devices=[device("mixer", False, 10), device("pump", False, 1), device("scale", True)],
        )
        [mixer] = await raised()  # the pump is offline for less than 5 minutes
        assert (mixer["subject"], mixer["line_id"]) == (f"device/{edge}/mixer", "line-1")
        assert mixer["cleared_at"] is None
        assert [a["alert_id"] for a in await raised()] == [mixer["alert_id"]]  # once

        await stored(interval_s=60, devices=[device("mixer", True), device("pump", True)])
        [back] = await raised()
        assert back["cleared_at"] is not None

        # The whole edge: offline (its will) for longer than N (here 0) minutes, twice.
        async with collector.client(Role.admin) as api:
            body = {"name": made["name"], "condition": {**condition, "minutes": 0}}
            assert (await api.put(f"/api/v1/alert-rules/{made['rule_id']}", json=body)).is_success
        await stored(state="offline")
        await stored(interval_s=60)
        await stored(state="offline")
        first = await raised()
        await stored(interval_s=60)
        await stored(state="offline")
        second = await raised()
    edge_alerts = [a for a in second if a["subject"] == f"edge/{edge}"]
    assert len([a for a in first if a["subject"] == f"edge/{edge}"]) == 1
    assert len(edge_alerts) == 1  # still the same occurrence: it never came back between
    assert "offline" in edge_alerts[0]["summary"]


async def test_an_outbox_alarm_is_one_alert_until_the_edge_reports_it_over(
    collector: RunningCollector, conn: psycopg.AsyncConnection
) -> None:
    edge = unique("edge")

    async def after(**fields: Any) -> list[dict]:
        assert await edge_status.store(conn, status(edge, interval_s=60, **fields), False)
        await evaluator.evaluate(conn)
        return await of_edge(collector, "outbox_alarm", edge)

    async with rule(collector, {"kind": "outbox_alarm", "edges": [edge], "depth": 1000}):
        assert await after(outbox_depth=10) == []
        [deep] = await after(outbox_depth=5000)
        assert deep["detail"]["outbox_depth"] == 5000
        assert "outbox 5000 records" in deep["summary"]
        [same] = await after(outbox_depth=10, alarms=["outbox full: oldest readings dropped"])
        assert same["alert_id"] == deep["alert_id"] and same["cleared_at"] is None
        [over] = await after(outbox_depth=10)
        assert over["cleared_at"] is not None
        newer = await after(outbox_depth=2000)
    assert len(newer) == 2 and newer[0]["cleared_at"] is None  # a new occurrence


async def test_a_gap_left_open_raises_an_alert_and_clears_when_the_edge_resends(
    collector: RunningCollector, conn: psycopg.AsyncConnection
) -> None:
    edge, waiting = unique("edge"), unique("edge")
    topic = topics.data(edge, "readings")

    async def raised() -> list[dict]:
        await evaluator.evaluate(conn)
        return await of_edge(collector, "gap_found", edge)

    async with (
        rule(collector, {"kind": "gap_found", "edges": [edge], "after_minutes": 0}),
        rule(collector, {"kind": "gap_found", "edges": [waiting], "after_minutes": 60}),
    ):
        await ingest(conn, topic, envelope(edge, [reading(0), reading(1)]))
        await ingest(conn, topic, envelope(edge, [reading(5), reading(6)]))
        for sent in (envelope(waiting, [reading(0)]), envelope(waiting, [reading(3)])):
            await ingest(conn, topics.data(waiting, "readings"), sent)
        [gap] = await raised()
        assert (gap["detail"]["first_missing"], gap["detail"]["last_missing"]) == (2, 4)
        assert gap["subject"] == f"gap/{edge}/readings/e1/2-4"
        assert [g["alert_id"] for g in await raised()] == [gap["alert_id"]]
        assert await of_edge(collector, "gap_found", waiting) == []  # not open for an hour yet

        await ingest(conn, topic, envelope(edge, [reading(2), reading(3), reading(4)]))
        [filled] = await raised()
    assert filled["cleared_at"] is not None
