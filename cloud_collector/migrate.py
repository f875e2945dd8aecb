"""Brings a database to the current schema: every `migrations/NNNN_name.sql` not yet
applied, in order, each in its own transaction. Safe to run twice and from several
collectors at once (an advisory lock serialises them)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 7_204_011  # any constant shared by all collectors
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def available() -> list[Migration]:
    found = []
    for path in sorted(MIGRATIONS.iterdir()):
        m = _FILE.match(path.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), path))
        elif path.suffix == ".sql":
            raise RuntimeError(f"{path}: migration files must be named NNNN_lowercase_name.sql")
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number in {MIGRATIONS}")
    return found


def migrate(database_url: str) -> list[int]:
    """Apply what is missing; returns the versions applied now."""
    applied_now: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "create table if not exists schema_migrations ("
            " version integer primary key, name text not null,"
            " applied_at timestamptz not null default now())"
        )
        for migration in available():
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                done = conn.execute(
                    "select 1 from schema_migrations where version = %s", (migration.version,)
                ).fetchone()
                if done:
                    continue
                log.info("applying migration %04d_%s", migration.version, migration.name)
                conn.execute(migration.path.read_text(encoding="utf-8"))  # type: ignore[arg-type]
                conn.execute(
                    "insert into schema_migrations (version, name) values (%s, %s)",
                    (migration.version, migration.name),
                )
                applied_now.append(migration.version)
    return applied_now
