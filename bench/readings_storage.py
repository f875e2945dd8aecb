"""What a reading costs on disk: N rows (default 1,000,000) shaped as a plant writes them
(20 lines x 50 tags, one reading per tag per second, in batches) copied into `readings` of a
fresh database migrated to the current schema, then the hypertable's table, index and TOAST
bytes per row, and the rollups' rows and bytes (rebuilt from those readings as ingest keeps
them). The figures for docs/scaling.md.

    eval "$(bash deploy/services.sh up)"; .venv/bin/python bench/readings_storage.py
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from datetime import UTC, datetime, timedelta

import psycopg

from cloud_collector import rollups
from cloud_collector.migrate import migrate

LINES, TAGS = 20, 50
_COLUMNS = (
    "time, device_time, received_at, line_id, batch_id, device, tag, value, unit, quality,"
    " detail, stream_id, seq"
)
_SIZES = """
select table_bytes, index_bytes, toast_bytes, total_bytes
from hypertable_detailed_size('readings')
"""
_ROLLUPS = ("batch_tag_stats", "batch_tag_minutes")
# Each index of the chunks, by the name of the hypertable's index it copies.
_INDEXES = """
select regexp_replace(i.indexrelid::regclass::text, '^.*_chunk_', ''),
       sum(pg_relation_size(i.indexrelid))
from show_chunks('readings') c(chunk) join pg_index i on i.indrelid = c.chunk
group by 1 order by 2 desc
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    base = os.environ.get("TRACE_DATABASE_URL")
    if not base:
        sys.exit('TRACE_DATABASE_URL is not set: run eval "$(bash deploy/services.sh up)" first')
    name = "bench_readings_storage"
    admin = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")
        conn.execute(f"create database {name}")
    url = base.rsplit("/", 1)[0] + "/" + name
    migrate(url)
    rng = random.Random(7)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    with psycopg.connect(url) as conn:
        streams = [
            conn.execute(
                "insert into edge_streams (edge_id, stream, epoch) values (%s, 'readings', 'e1')"
                " returning stream_id",
                (f"plant01-line{line:02d}",),
            ).fetchone()[0]  # type: ignore[index]
            for line in range(LINES)
        ]
        seqs = [0] * LINES
        with conn.cursor().copy(f"copy readings ({_COLUMNS}) from stdin") as copy:
            for i in range(args.rows):
                second, slot = divmod(i, LINES * TAGS)
                line, tag = divmod(slot, TAGS)
                at = start + timedelta(seconds=second)
                # A batch of 40 minutes per line; half the devices give their own timestamp
                # (OPC UA source times), the other half none (Modbus).
                batch = f"L{line:02d}-{at:%Y%m%d}-{at.hour * 60 // 40 + at.minute // 40:02d}"
                copy.write_row(
                    (
                        at,
                        at - timedelta(milliseconds=5) if tag % 2 == 0 else None,
                        at + timedelta(milliseconds=300),
                        f"line-{line:02d}",
                        batch,
                        f"plc-{line:02d}-{tag // 10}",
                        f"zone{tag % 10}.temperature",
                        rng.uniform(150.0, 250.0),
                        "Cel",
                        "good",
                        None,
                        streams[line],
                        seqs[line],
                    )
                )
                seqs[line] += 1
        conn.commit()
        conn.execute("analyze readings")
        table, index, toast, total = conn.execute(_SIZES).fetchone()  # type: ignore[misc]
        indexes = conn.execute(_INDEXES).fetchall()
        for statement in rollups.REBUILD:
            conn.execute(statement)  # type: ignore[arg-type]
        conn.commit()
        rollup_sizes = [
            (
                relname,
                conn.execute(f"select count(*) from {relname}").fetchone()[0],  # type: ignore[index]
                conn.execute("select pg_total_relation_size(%s::regclass)", (relname,)).fetchone()[
                    0
                ],  # type: ignore[index]
            )
            for relname in _ROLLUPS
        ]
    n = args.rows
    print(f"readings: {n:,} rows in one chunk")
    print(f"  table  {table / n:6.1f} B/row")
    print(f"  index  {index / n:6.1f} B/row, of which:")
    for index_name, size in indexes:
        print(f"    {index_name:<28} {size / n:6.1f} B/row")
    print(f"  toast  {toast / n:6.1f} B/row")
    print(f"  total  {total / n:6.1f} B/row  ({total / 2**20:,.0f} MiB)")
    for relname, rows, size in rollup_sizes:
        per = size / rows if rows else 0
        print(f"{relname}: {rows:,} rows, {size / 2**20:,.1f} MiB, {per:,.0f} B/row")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")


if __name__ == "__main__":
    main()
