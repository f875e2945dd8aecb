"""trace_bench built from scratch: dropped, recreated, migrated, loaded without its plain
indexes, which are rebuilt afterwards with the rollups; then vacuumed and analysed."""

from __future__ import annotations

import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg.conninfo import make_conninfo

from bench.genealogy.generate import generate
from bench.genealogy.load import COPY, Loader
from bench.genealogy.plant import Sizes
from cloud_collector import genealogy, rollups
from cloud_collector.migrate import migrate

BENCH_DB = "trace_bench"
ROLLUP_TABLES = ["batch_tag_stats", "batch_tag_minutes", "batch_tag_percentiles"]


def _admin_url(url: str) -> str:
    return make_conninfo(url, dbname="postgres")


def bench_url(url: str) -> str:
    return make_conninfo(url, dbname=BENCH_DB)


_PLAIN_INDEXES = """
select c.relname, i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
from pg_index i join pg_class c on c.oid = i.indrelid
join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public'
  and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid)
order by c.relname
"""


def build(url: str, scale: float, seed: int) -> tuple[dict[str, int], float]:
    """Drops and recreates trace_bench, migrates and fills it; returns the rows copied per
    table and the seconds it all took (indexes, vacuum and analyze included)."""
    t0 = time.perf_counter()
    with psycopg.connect(_admin_url(url), autocommit=True) as admin:
        admin.execute(f"drop database if exists {BENCH_DB} with (force)")
        admin.execute(f"create database {BENCH_DB}")
    bench = bench_url(url)
    migrate(bench)
    rng = random.Random(seed)
    sizes = Sizes.at(scale)
    plant = generate(sizes, rng)
    log(f"planned {len(plant.lots):,} lots and {len(plant.batches):,} batches", t0)
    loader = Loader(plant, sizes, rng)
    with psycopg.connect(bench, autocommit=True) as conn:
        indexes = conn.execute(_PLAIN_INDEXES).fetchall()  # loaded faster without them
        for _, name, _ in indexes:
            conn.execute(f"drop index {name}")  # type: ignore[arg-type]
    with psycopg.connect(bench) as conn, psycopg.connect(bench) as conn2:
        conn.execute("set synchronous_commit = off")
        conn2.execute("set synchronous_commit = off")
        conn.execute("set session_replication_role = replica")  # no FK checks: built whole
        loader.genealogy(conn)
        conn.execute("set session_replication_role = origin")
        conn.commit()
        log(f"genealogy copied ({loader.counts['lot_links']:,} links)", t0)
        loader.readings(conn, conn2)
        loader.copy(conn, "sequence_gaps", iter(loader.holes))
        with conn.cursor() as cur:
            cur.executemany(
                "update edge_streams set high_water = %s, high_water_time = %s"
                " where stream_id = %s",
                [(high, t, stream) for stream, (high, t) in loader.high_water.items()],
            )
        for table, column in (("lots", "lot_id"), ("edge_streams", "stream_id")):
            conn.execute(
                f"select setval(pg_get_serial_sequence('{table}', '{column}'),"  # type: ignore[arg-type]
                f" (select max({column}) from {table}))"
            )
        conn.commit()
        conn2.commit()
        log(f"{loader.counts['readings']:,} readings copied", t0)

    def run(statements: list[str]) -> None:
        with psycopg.connect(bench, autocommit=True) as c:
            c.execute("set maintenance_work_mem = '1GB'")
            for s in statements:
                c.execute(s)  # type: ignore[arg-type]

    with ThreadPoolExecutor(2) as pool:  # the readings' indexes on one core, the rest on the other
        list(pool.map(run, [[d for t, _, d in indexes if (t == "readings") == r] for r in (1, 0)]))
    log(f"{len(indexes)} indexes rebuilt", t0)
    with psycopg.connect(bench, autocommit=True) as c:
        c.execute("set work_mem = '256MB'")
        rollups.rebuild(c)
        c.execute(genealogy.RECOUNT_ALL)
    log("rollups, last places and lot quantities built, as ingest keeps them", t0)
    others = ", ".join([t for t in COPY if t != "readings"] + ROLLUP_TABLES)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, [["vacuum (analyze) readings"], [f"vacuum (analyze) {others}"]]))
    log("vacuumed and analyzed", t0)
    return dict(loader.counts), time.perf_counter() - t0


def log(what: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f} s] {what}", file=sys.stderr, flush=True)
