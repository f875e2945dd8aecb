"""Fixtures of the chaos tests: a PostgreSQL cluster with TimescaleDB of their own (one per
session; the PostgreSQL restart must not take the shared one from other tests), a broker of
each test's own (persistence on), and the fleet that runs on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.chaos.fleet import RECOVERIES, Fleet, Scale
from tests.chaos.world import PostgresCluster
from tests.conftest import MosquittoProcess, Services


@pytest.fixture(scope="session")
def chaos_cluster(services: Services) -> Iterator[tuple[PostgresCluster, str]]:
    """The private cluster and its migrated database. `services` first: deploy/services.sh
    installs PostgreSQL and TimescaleDB, whose binaries this cluster runs."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster, cluster.create_database("chaos")
    finally:
        cluster.remove()


@pytest.fixture
def chaos_broker(
    tmp_path: Path, chaos_cluster: tuple[PostgresCluster, str]
) -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(tmp_path / "mosquitto", registry_url=chaos_cluster[1])
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def fleet(
    tmp_path: Path, chaos_cluster: tuple[PostgresCluster, str], chaos_broker: MosquittoProcess
) -> AsyncIterator[Fleet]:
    plant = Fleet(tmp_path, chaos_cluster[1], chaos_broker, Scale.from_env())
    try:
        yield plant
    finally:
        await plant.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RECOVERIES:
        return
    terminalreporter.section("chaos: recovery time (fault's end to all committed)")
    for r in RECOVERIES:
        figures = ", ".join(f"{s:.1f}" for s in r.seconds)
        terminalreporter.write_line(f"{r.scenario:<44} {figures} s   {r.verdict}")
