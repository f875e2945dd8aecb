"""Migrations bring an empty database to the current schema, and running them again is a no-op."""

from __future__ import annotations

import psycopg

from cloud_collector.migrate import available, migrate
from tests.conftest import Services


def test_empty_database_to_current_schema_twice(services: Services) -> None:
    admin = services.database_url.rsplit("/", 1)[0] + "/postgres"
    url = services.database_url.rsplit("/", 1)[0] + "/trace_migrate_test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("drop database if exists trace_migrate_test with (force)")
        conn.execute("create database trace_migrate_test")
    try:
        assert migrate(url) == [m.version for m in available()]
        assert migrate(url) == []
        with psycopg.connect(url) as conn:
            hypertables = conn.execute(
                "select hypertable_name from timescaledb_information.hypertables"
            ).fetchall()
            versions = conn.execute("select version from schema_migrations").fetchall()
        assert ("readings",) in hypertables
        assert versions == [(m.version,) for m in available()]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("drop database if exists trace_migrate_test with (force)")
