"""The bench's databases and identities, the same-run COPY baseline, and the count that
proves nothing was lost or doubled.

Each measurement gets a fresh database, `trace_bench_ingest`, cloned from a template that
is migrated once per invocation (so a clone is as a new site's collector would find it);
the one of the last measurement is left for a look. The broker identities (an edge each,
a collector each) are issued in the registry of TRACE_DATABASE_URL, as `tracectl edge
add` does, because the broker's files are rendered from there, and are revoked at the end;
the template's registry holds them too, since each collector checks its own database's.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiomqtt
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.ingest.fleet import VARIANTS, device_name, line_name
from cloud_collector import broker_identities
from cloud_collector.broker_identities import BrokerFiles, IdentityKind
from cloud_collector.ingest import READING_COLUMNS, READING_TYPES
from cloud_collector.migrate import migrate
from protocols.mqtt.connection import BrokerSettings

BENCH_DB = "trace_bench_ingest"
TEMPLATE_DB = "trace_bench_ingest_template"
COMMENT = "bench.ingest"

# `readings`' shape and indexes, made a hypertable as migration 0001 makes readings.
COPY_TABLE = "readings_copy"
_COPY_TABLE_DDL = (
    f"create table {COPY_TABLE} (like readings including all)",
    f"select create_hypertable('{COPY_TABLE}', by_range('time', interval '1 day'))",
)
_INDEXES = """
select indexdef from pg_indexes where schemaname = 'public' and tablename = %s order by indexdef
"""
_COPY_ROWS = f"copy {COPY_TABLE} ({READING_COLUMNS}) from stdin (format binary)"

# Per edge: its rows, the distinct sequence numbers among them within 0..expected-1, and
# the rows numbered outside it, and its distinct numbers. The bench sends one stream in one
# epoch: the same number in two rows (of one stream or two) is a reading doubled.
_TALLY = """
select e.edge_id, count(*),
       count(distinct r.seq) filter (where r.seq between 0 and %(last)s),
       count(*) filter (where r.seq not between 0 and %(last)s),
       count(distinct r.seq)
from {table} r join edge_streams e using (stream_id)
group by e.edge_id
"""
_DEAD_LETTERS = "select count(*) from dead_letters"


def admin_url(url: str) -> str:
    return make_conninfo(url, dbname="postgres")


def database_url(url: str, name: str) -> str:
    return make_conninfo(url, dbname=name)


# -- identities ---------------------------------------------------------------------------


async def issue_identities(
    registry_url: str,
    files: BrokerFiles,
    broker: BrokerSettings,
    edges: Sequence[str],
    collectors: Sequence[str],
) -> dict[str, BrokerSettings]:
    """Issue (or rotate) an identity per edge and per collector, render the broker's files
    and wait until the broker takes them; their connection settings by name."""
    migrate(registry_url)
    settings: dict[str, BrokerSettings] = {}
    async with await psycopg.AsyncConnection.connect(registry_url, autocommit=True) as conn:
        for names, kind in ((edges, IdentityKind.edge), (collectors, IdentityKind.collector)):
            for name in names:
                issued = await broker_identities.issue(conn, name, kind, COMMENT, rotate=True)
                settings[name] = broker.model_copy(
                    update={"username": issued.name, "password": issued.password}
                )
        await broker_identities.update_broker(conn, files)
    await _until_accepted(settings[collectors[-1]] if collectors else settings[edges[-1]])
    return settings


async def revoke_identities(registry_url: str, files: BrokerFiles, names: Iterable[str]) -> None:
    async with await psycopg.AsyncConnection.connect(registry_url, autocommit=True) as conn:
        for name in names:
            await broker_identities.revoke(conn, name)
        await broker_identities.update_broker(conn, files)


async def _until_accepted(settings: BrokerSettings, timeout_s: float = 15.0) -> None:
    """The broker re-reads its files a moment after SIGHUP."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with aiomqtt.Client(
                **settings.client_args(),  # type: ignore[arg-type]
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=True,
                timeout=2,
            ):
                return
        except aiomqtt.MqttError as err:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the broker does not take identity {settings.username} {timeout_s:.0f} s "
                    f"after its files were rendered ({err}): are TRACE_BROKER_PASSWORD_FILE, "
                    "TRACE_BROKER_ACL_FILE and TRACE_BROKER_PID_FILE the broker's? "
                    '(eval "$(bash deploy/services.sh up)" sets them)'
                ) from err
            await asyncio.sleep(0.2)


# -- databases ----------------------------------------------------------------------------


async def make_template(base_url: str, edges: Sequence[str], name: str = TEMPLATE_DB) -> None:
    """A migrated database whose registry accepts the bench's edges (the collector asks
    its own database), for fresh_database to clone."""
    with psycopg.connect(admin_url(base_url), autocommit=True) as admin:
        _drop(admin, name)
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    url = database_url(base_url, name)
    migrate(url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for edge in edges:
            await broker_identities.issue(conn, edge, IdentityKind.edge, COMMENT, rotate=True)


def fresh_database(base_url: str, name: str = BENCH_DB, template: str = TEMPLATE_DB) -> str:
    create = sql.SQL("create database {} template {}").format(
        sql.Identifier(name), sql.Identifier(template)
    )
    with psycopg.connect(admin_url(base_url), autocommit=True) as admin:
        _drop(admin, name)
        for attempt in range(50):
            try:
                admin.execute(create)
                break
            except psycopg.errors.ObjectInUse:
                # A backend of the template's last client takes a moment to exit.
                if attempt == 49:
                    raise
                time.sleep(0.1)
    return database_url(base_url, name)


def _drop(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def drop_database(base_url: str, name: str) -> None:
    with psycopg.connect(admin_url(base_url), autocommit=True) as admin:
        _drop(admin, name)


# Standbys streaming from the cluster, and slots keeping an xmin (a standby's
# hot_standby_feedback, kept by its slot even when it is away).
_REPLICAS = """
select 'standby ' || coalesce(application_name, '?') || ' at '
       || coalesce(client_addr::text, 'local')
from pg_stat_replication
union all
select 'slot ' || slot_name || ' keeping xmin ' || xmin
from pg_replication_slots where xmin is not null
"""


def replicas(url: str) -> list[str]:
    """What replicates the cluster the bench measures. A standby replays every row the
    bench writes on the same cores, and its feedback holds back the pruning of the rollups'
    dead row versions (measured with the local read standby running: 0.93 / 0.65 x COPY at
    500 / 100 records a message, against 1.05 / 0.70 with it stopped, one run each)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(r[0]) for r in conn.execute(_REPLICAS).fetchall()]


def checkpoint(url: str) -> None:
    """A checkpoint of the whole cluster: the timed phase after it neither pays for the
    writes of the one before nor gets a checkpoint half done by it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("checkpoint")


def backend_pid(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


# -- the COPY baseline --------------------------------------------------------------------


def copy_rows(
    edges: int,
    tags: int,
    per_edge: int,
    batch: str,
    t0: datetime,
    records_per_message: int | None = None,
) -> list[tuple[object, ...]]:
    """The rows the fleet's readings become: per edge (stream_id 1..), seq 0.., a poll of
    `tags` readings every 50 ms, the values the fleet's templates cycle through.

    In the order they reach the database: with `records_per_message`, a message's run of
    one edge's rows, the edges' messages taking turns, as the fleet sends them; without,
    edge by edge (every row of the first edge, then of the second...), as a bulk load
    of each edge's history would come."""
    received = datetime.now(UTC)
    per_edge_rows: list[list[tuple[object, ...]]] = []
    for e in range(edges):
        line, device = line_name(e + 1), device_name(e + 1)
        own: list[tuple[object, ...]] = []
        for seq in range(per_edge):
            tag = seq % tags
            value = round(20.0 + tag / 7 + ((seq // tags) % VARIANTS) / 10, 3)
            at = t0 + timedelta(milliseconds=50 * (seq // tags))
            own.append(
                (at, None, received, line, batch, device, f"tag-{tag:03d}", value, "Cel",
                 "good", None, e + 1, seq, False)
            )  # fmt: skip
        per_edge_rows.append(own)
    if records_per_message is None:
        return [row for own in per_edge_rows for row in own]
    return [
        row
        for start in range(0, per_edge, records_per_message)
        for own in per_edge_rows
        for row in own[start : start + records_per_message]
    ]


def _index_shapes(conn: psycopg.Connection, table: str) -> list[str]:
    """Index definitions with the table and index names taken out."""
    defs = [r[0] for r in conn.execute(_INDEXES, (table,)).fetchall()]
    return sorted(
        re.sub(r"^CREATE (UNIQUE )?INDEX \S+ ON public\.\S+", r"CREATE \1INDEX ON", d) for d in defs
    )


def measure_copy(url: str, rows: list[tuple[object, ...]]) -> float:
    """Seconds to COPY `rows` (FORMAT BINARY, one connection, one transaction, committed)
    into a fresh table of readings' shape and indexes in the database `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _COPY_TABLE_DDL:
            conn.execute(statement)  # type: ignore[arg-type]
        ours, theirs = _index_shapes(conn, COPY_TABLE), _index_shapes(conn, "readings")
        if ours != theirs:
            raise RuntimeError(f"{COPY_TABLE} indexes {ours} are not readings' {theirs}")
    checkpoint(url)
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(_COPY_ROWS) as copy:  # type: ignore[arg-type]
            copy.set_types(READING_TYPES)
            for row in rows:
                copy.write_row(row)
        conn.commit()
        return time.perf_counter() - start


# -- nothing lost, nothing doubled --------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """What a table holds of the readings the fleet numbered 0..n-1 per edge."""

    rows: int
    missing: int  # numbered by an edge, in no row
    doubled: int  # rows beyond the first of one (edge, seq)
    unexpected: int  # rows of an edge or a number the fleet never sent

    @property
    def clean(self) -> bool:
        return self.missing == 0 and self.doubled == 0 and self.unexpected == 0


def tally(conn: psycopg.Connection, expected: dict[str, int], table: str = "readings") -> Tally:
    """Count `table` against `expected` (readings numbered 0..n-1 per edge): the check that
    follows every run. All edges must have sent the same count."""
    counts = set(expected.values())
    if len(counts) > 1:
        raise ValueError(f"edges sent different counts {sorted(counts)}: tally them apart")
    per_edge = counts.pop() if counts else 0
    query = sql.SQL(_TALLY).format(table=sql.Identifier(table))
    found = {
        edge: (rows, in_range, outside, distinct)
        for edge, rows, in_range, outside, distinct in conn.execute(
            query, {"last": per_edge - 1}
        ).fetchall()
    }
    rows = missing = doubled = unexpected = 0
    for edge, (n, _, outside, distinct) in found.items():
        rows += n
        doubled += n - distinct
        if edge in expected:
            unexpected += outside
        else:
            unexpected += n
    for edge, n in expected.items():
        missing += n - (found[edge][1] if edge in found else 0)
    return Tally(rows, missing, doubled, unexpected)


def dead_letters(conn: psycopg.Connection) -> int:
    row = conn.execute(_DEAD_LETTERS).fetchone()
    return int(row[0]) if row else 0
