"""bench/collector_ingest.py runs end to end on a tiny load: its group commit drives the
consumer's own grouper and committer (a change of theirs that the script does not follow
fails here, not at the next measurement)."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg

from tests.conftest import ROOT, Services


def test_the_collector_ingest_benchmark_runs_on_a_tiny_load(services: Services) -> None:
    database = f"bench_smoke_{os.getpid()}"
    env = {**os.environ, "TRACE_DATABASE_URL": services.database_url}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.collector_ingest"),
            *("--readings", "2000", "--sizes", "100", "--edges", "2", "--tags", "5"),
            *("--runs", "1", "--skip-one-by-one", "--database", database),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    try:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        assert "run 1 size 100: COPY" in done.stdout and "group commit" in done.stdout
    finally:
        admin = services.database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"drop database if exists {database} with (force)")  # type: ignore[arg-type]
