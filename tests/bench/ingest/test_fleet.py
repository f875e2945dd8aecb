"""The ingest benchmark's instrument: its edges speak the edge agent's wire format, count
what acks say, resend what is not acknowledged, and its count of the table finds a reading
lost or doubled. Against the real broker, the real `cloud-collector` process and the
project's TimescaleDB, with a fleet of 2 edges x 200 readings."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from bench.ingest import database
from bench.ingest.fleet import (
    EPOCH,
    SimulatedEdge,
    acknowledged_elsewhere,
    edge_name,
    iso,
    reading_templates,
)
from bench.ingest.measure import (
    BATCH,
    Load,
    Measurement,
    Setup,
    collector_name,
    free_port,
    measure,
    percentiles,
)
from bench.ingest.processes import (
    forget_session,
    start_collector,
    stop_collector,
    until_consuming,
)
from bench.ingest.report import Run, two_against_one
from cloud_collector.broker_identities import IdentityKind
from edge_agent.outbox import numbered
from edge_agent.records import UNNUMBERED
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import Envelope, Reading
from tests.conftest import ROOT, TEST_DB, MosquittoProcess, Services

EDGES = [edge_name(1), edge_name(2)]
COLLECTORS = [collector_name(1)]


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 2, 7, 30, 1, 250_001, tzinfo=UTC),
        datetime(2026, 12, 2, 7, 30, tzinfo=UTC),
    ],
)
def test_each_reading_is_the_json_the_edge_outbox_stores(moment: datetime) -> None:
    templates = reading_templates("line-01", BATCH, "plc-01", tags=3)
    for seq in (0, 4, 2**40):
        tag, variant = seq % 3, (seq // 3) % 16
        body = templates[tag][variant] % (seq, iso(moment))
        edge = Reading(
            seq=UNNUMBERED,
            time=moment,
            line="line-01",
            batch=BATCH,
            device="plc-01",
            tag=f"tag-{tag:03d}",
            value=round(20.0 + tag / 7 + variant / 10, 3),
            unit="Cel",
        )
        assert body == numbered(edge.model_dump_json(), seq)


def test_a_message_is_a_valid_envelope_of_contiguous_readings() -> None:
    edge = SimulatedEdge(1, BrokerSettings(), 50, BATCH, 500, 10, 10.0, 0.0)
    t = datetime(2026, 12, 2, 7, 30, tzinfo=UTC).timestamp()
    payload = edge.payload(120, [(t, 30), (t + 0.05, 50), (t + 0.1, 20)])
    envelope = Envelope.model_validate_json(payload)
    assert (envelope.edge_id, envelope.stream, envelope.epoch) == (edge_name(1), "readings", EPOCH)
    assert (envelope.first_seq, envelope.last_seq) == (120, 219)
    readings = [r for r in envelope.records if isinstance(r, Reading)]
    assert [r.tag for r in readings[:2]] == ["tag-020", "tag-021"]  # seq 120 = tag 20
    assert readings[30].time.timestamp() == pytest.approx(t + 0.05)


def test_latency_percentiles_weigh_each_reading() -> None:
    # 90 readings acknowledged after 0.1 s, 10 after 2 s: p50 is 100 ms, p95 and p99 2 s.
    got = percentiles([(2.0, 10), (0.1, 90)], (0.5, 0.95, 0.99))
    assert got == {"p50": pytest.approx(100.0), "p95": 2000.0, "p99": 2000.0}


@pytest.fixture(scope="module")
async def template(services: Services) -> AsyncIterator[str]:
    """The bench's template database, whose registry holds the fleet's edges."""
    name = f"{TEST_DB}_ingest_template"
    await database.make_template(services.database_url, EDGES, name)
    yield name
    database.drop_database(services.database_url, name)


@pytest.fixture
async def setup(
    services: Services, private_broker: MosquittoProcess, template: str, tmp_path: Path
) -> Setup:
    """The fleet's and the collector's identities on a broker of the test's own, so that no
    other collector (the session's, on the shared broker) sees the fleet's messages."""
    assert private_broker.proc is not None
    identities = {name: await private_broker.register(name) for name in EDGES}
    for name in COLLECTORS:
        identities[name] = await private_broker.register(name, IdentityKind.collector)
    return Setup(
        base_url=services.database_url,
        broker_pid=private_broker.proc.pid,
        identities=identities,
        edges=2,
        tags=50,
        window=2,
        ack_timeout_s=1.0,
        linger_s=0.05,
        logs=tmp_path,
        timeout_s=60.0,
        bench_db=f"{TEST_DB}_ingest",
        template_db=template,
    )


async def test_a_tiny_fleet_is_counted_from_acks_and_matches_the_table(setup: Setup) -> None:
    m = await measure(setup, Load(collectors=1, records=100, readings=400))
    assert (m.sent, m.committed, m.refused, m.messages) == (400, 400, 0, 4)
    assert m.tally == database.Tally(rows=400, missing=0, doubled=0, unexpected=0)
    assert m.problems == []
    assert m.rate > 0 and 0 < m.latency_ms["p50"] <= m.latency_ms["p99"]
    # CPU of every process read, and the collector's peak memory.
    assert set(m.cpu_percent) == {collector_name(1), "broker", "postgres", "generator"}
    assert all(v is not None and v >= 0 for v in m.cpu_percent.values())
    assert (m.peak_rss_mb[collector_name(1)] or 0) > 20

    # The same count finds a reading deleted, one doubled and one never sent.
    url = database.database_url(setup.base_url, setup.bench_db)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table doctored as select * from readings")
        conn.execute(
            "delete from doctored"
            " where (stream_id, seq) = (select stream_id, 7 from doctored limit 1)"
        )
        conn.execute("insert into doctored select * from doctored where seq = 150 limit 1")
        conn.execute(
            "insert into doctored select time, device_time, received_at, line_id, batch_id,"
            " device, tag, value, unit, quality, detail, stream_id, 999, backfill"
            " from doctored where seq = 3 limit 1"
        )
        found = database.tally(conn, {e: 200 for e in EDGES}, "doctored")
        assert found == database.Tally(rows=401, missing=1, doubled=1, unexpected=1)
        assert not found.clean
        # An edge that sent nothing the table holds: all its readings missing.
        assert database.tally(conn, {**{e: 200 for e in EDGES}, edge_name(3): 200}).missing == 200


async def test_an_edge_resends_what_no_collector_acknowledged(setup: Setup) -> None:
    """Messages published while no collector is subscribed are dropped by the broker; the
    edges send them again after their ack timeout, and each reading is committed once."""
    url = database.fresh_database(setup.base_url, setup.bench_db, setup.template_db)
    name = collector_name(1)
    await forget_session(setup.identities[name])
    edges = [
        SimulatedEdge(i, setup.identities[edge_name(i)], 50, BATCH, 100, 2, 1.0, 0.0)
        for i in (1, 2)
    ]
    connected = asyncio.Barrier(3)
    runs = [asyncio.create_task(e.run(connected, 200, None)) for e in edges]
    await connected.wait()
    await asyncio.sleep(0.5)  # the first messages go out to no subscriber
    assert all(e.tally.messages >= 1 and e.tally.committed == 0 for e in edges)
    collector = start_collector(
        name, setup.identities[name], url, "bench-test-resend", free_port(), setup.logs / "r.log"
    )
    try:
        await until_consuming([collector])
        async with asyncio.timeout(30):
            tallies = await asyncio.gather(*runs)
    finally:
        stop_collector(collector)
        await forget_session(setup.identities[name])
    assert sum(t.resent_messages for t in tallies) >= 2
    assert [t.committed for t in tallies] == [200, 200]
    with psycopg.connect(url) as conn:
        assert database.tally(conn, {e: 200 for e in EDGES}).clean
        assert database.tally(conn, {e: 200 for e in EDGES}).rows == 400


async def test_the_probe_finds_a_collector_that_would_take_the_fleets_readings(
    setup: Setup,
) -> None:
    edge = setup.identities[edge_name(1)]
    assert not await acknowledged_elsewhere(edge, 1, wait_s=1.0)
    url = database.fresh_database(setup.base_url, setup.bench_db, setup.template_db)
    name = collector_name(1)
    collector = start_collector(
        name, setup.identities[name], url, "bench-test-probe", free_port(), setup.logs / "p.log"
    )
    try:
        await until_consuming([collector])
        assert await acknowledged_elsewhere(edge, 1)
    finally:
        stop_collector(collector)
        await forget_session(setup.identities[name])


def test_a_measurement_names_every_difference_between_acks_and_table() -> None:
    clean = database.Tally(rows=400, missing=0, doubled=0, unexpected=0)
    m = Measurement(
        load=Load(collectors=1, records=100, readings=400),
        sent=400,
        committed=400,
        refused=0,
        messages=4,
        resent_messages=0,
        late_acks=0,
        bad_acks=0,
        seconds=1.0,
        latency_ms={},
        cpu_percent={},
        peak_rss_mb={},
        tally=clean,
        dead_letters=0,
    )
    assert m.problems == []
    m.tally = database.Tally(rows=399, missing=1, doubled=0, unexpected=0)
    assert m.problems == [
        "missing 1, doubled 0, unexpected 0",
        "the table holds 399 rows, the acks said 400",
    ]
    m.tally, m.committed, m.dead_letters = clean, 300, 1
    assert m.problems == [
        "the table holds 400 rows, the acks said 300",
        "100 readings never settled",
        "1 dead letters",
    ]


def test_the_copy_rows_come_in_the_fleets_order_or_edge_by_edge() -> None:
    """The same rows either way: as the fleet sends them (each message's run of one edge,
    the edges taking turns) or as a bulk load (each edge's whole history in turn)."""
    t0 = datetime(2026, 11, 25, 10, tzinfo=UTC)
    sent = database.copy_rows(2, 3, 6, "B", t0, records_per_message=4)
    bulk = database.copy_rows(2, 3, 6, "B", t0)
    stream_seq = [(row[11], row[12]) for row in sent]
    assert stream_seq == [
        *((1, s) for s in range(4)),
        *((2, s) for s in range(4)),
        *((1, s) for s in (4, 5)),
        *((2, s) for s in (4, 5)),
    ]
    assert [(row[11], row[12]) for row in bulk] == [(e, s) for e in (1, 2) for s in range(6)]
    # received_at (the third column) is each call's own clock reading
    same = sorted((r[:2] + r[3:] for r in sent), key=lambda r: (r[10], r[11]))
    assert same == [r[:2] + r[3:] for r in bulk]


def _flat_out(
    collectors: int, records: int, seconds: float, before: float, after: float
) -> Measurement:
    return Measurement(
        load=Load(collectors=collectors, records=records, readings=1000),
        sent=1000,
        committed=1000,
        refused=0,
        messages=1000 // records,
        resent_messages=0,
        late_acks=0,
        bad_acks=0,
        seconds=seconds,
        latency_ms={},
        cpu_percent={},
        peak_rss_mb={},
        tally=database.Tally(rows=1000, missing=0, doubled=0, unexpected=0),
        dead_letters=0,
        copy_before=before,
        copy_after=after,
    )


def test_a_load_is_held_against_the_mean_of_the_copies_around_it() -> None:
    m = _flat_out(1, 100, 1.0, before=1000.0, after=3000.0)
    assert m.copy_rate == 2000.0
    m.copy_after = None
    assert m.copy_rate == 1000.0
    assert m.as_json()["copy_rate"] == 1000.0
    m.copy_before = None
    assert m.copy_rate is None


def test_two_collectors_are_compared_with_one_run_by_run_as_measured_and_against_copy() -> None:
    runs = [
        Run(1000, [_flat_out(1, 100, 1.0, 2000, 2000), _flat_out(2, 100, 0.8, 2500, 2500)]),
        Run(1000, [_flat_out(1, 100, 1.0, 2000, 2000), _flat_out(2, 100, 1.25, 1000, 1000)]),
    ]
    assert two_against_one(runs) == [
        "2 collectors against 1 at 100 records a message, run by run: 1.25 / 0.80 x as "
        "measured, 1.00 / 1.60 x against each load's COPY."
    ]
    assert two_against_one([Run(1000, runs[0].measurements[:1])]) == []


def test_a_replicated_cluster_is_named_before_anything_is_measured(services: Services) -> None:
    """A standby replays the bench's writes on the same cores and its feedback holds back
    the cleanup the rollups need: the bench names it (and refuses to measure)."""
    script = str(ROOT / "deploy" / "services.sh")
    up = subprocess.run(["bash", script, "standby", "up"], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    try:
        found = database.replicas(services.database_url)
        assert any(r.startswith("standby ") for r in found), found  # its slot's xmin follows
    finally:
        down = subprocess.run(["bash", script, "standby", "down"], capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
    assert database.replicas(services.database_url) == []
