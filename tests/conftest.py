"""Session fixtures: the project's own broker and database, started (or reused) by
deploy/services.sh. A service that cannot start fails the run with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
import pytest
import uvicorn

from cloud_collector import auth
from cloud_collector.api import create_app
from cloud_collector.consumer import IngestCounters, run_consumer
from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.mqtt.connection import BrokerSettings

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
# Concurrent sessions (helpers, a second checkout) each name their own database.
TEST_DB = os.environ.get("TRACE_TEST_DB", "trace_test")


@dataclass(frozen=True)
class Services:
    mqtt_host: str
    mqtt_port: int
    database_url: str  # the test database, migrated

    @property
    def broker(self) -> BrokerSettings:
        return BrokerSettings(host=self.mqtt_host, port=self.mqtt_port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def services() -> Services:
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / "services.sh"), "up"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the project's services did not start (deploy/services.sh up exited "
            f"{proc.returncode}):\n{proc.stderr}\n{proc.stdout}",
            pytrace=False,
        )
    env = dict(re.findall(r"^export (\w+)=(\S+)$", proc.stdout, re.MULTILINE))
    base_url = env["TRACE_DATABASE_URL"]
    admin_url = base_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {TEST_DB} with (force)")
        conn.execute(f"create database {TEST_DB}")
    url = base_url.rsplit("/", 1)[0] + "/" + TEST_DB
    migrate(url)
    return Services(env["TRACE_MQTT_HOST"], int(env["TRACE_MQTT_PORT"]), url)


@pytest.fixture(scope="session")
def collector_settings(services: Services) -> CollectorSettings:
    return CollectorSettings(
        database_url=services.database_url,
        api_port=free_port(),
        collector_id=f"collector-test-{os.getpid()}",
        # A group of its own: a demo collector on the same broker never takes test messages.
        share_group=f"collectors-test-{os.getpid()}",
        mqtt=services.broker,
    )


@dataclass
class RunningCollector:
    settings: CollectorSettings
    counters: IngestCounters
    api_url: str
    keys: dict[auth.Role, str]  # an API key of each role but partner

    def headers(self, role: auth.Role = auth.Role.admin) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def client(self, role: auth.Role = auth.Role.admin) -> httpx.AsyncClient:
        """An HTTP client of the API with a key of `role`."""
        return httpx.AsyncClient(base_url=self.api_url, headers=self.headers(role))


async def issue_keys(database_url: str) -> dict[auth.Role, str]:
    """A key of each role but partner, under names of this test session."""
    keys = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for role in auth.Role:
            if role is not auth.Role.partner:
                issued = await auth.issue(conn, f"test-{os.getpid()}-{role}", role, replace=True)
                keys[role] = issued.key
    return keys


@pytest.fixture(scope="session")
async def collector(collector_settings: CollectorSettings) -> AsyncIterator[RunningCollector]:
    """The collector's consumer and HTTP API, running for real in the test's event loop."""
    counters = IngestCounters()
    ready = asyncio.Event()
    consumer = asyncio.create_task(run_consumer(collector_settings, counters, ready))
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(collector_settings, counters),
            host="127.0.0.1",
            port=collector_settings.api_port,
            log_level="warning",
        )
    )
    api = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        await ready.wait()
        while not server.started:
            if api.done():
                api.result()
            await asyncio.sleep(0.02)
    yield RunningCollector(
        collector_settings,
        counters,
        f"http://127.0.0.1:{collector_settings.api_port}",
        await issue_keys(collector_settings.database_url),
    )
    server.should_exit = True
    consumer.cancel()
    await asyncio.gather(api, consumer, return_exceptions=True)


class MosquittoProcess:
    """A broker of a test's own, on its own port and folder, that the test can stop and start
    (the outage tests must not take the shared broker away from the other tests)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {folder}/",
            "max_queued_messages 0",
            f"log_dest file {folder}/mosquitto.log",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # the test's folder is private to root
        (folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    @property
    def broker(self) -> BrokerSettings:
        return BrokerSettings(host="127.0.0.1", port=self.port)

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.folder / "mosquitto.conf")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}; see {self.folder}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


async def until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Poll `check` until it returns something truthy, and return that; fail naming `what`
    (the state a test waits for lives in a database or a broker: there is no event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


async def now_true(value: T) -> T:
    """`until` for a condition that needs no await: until(lambda: now_true(x == 1), ...)."""
    return value


@contextlib.asynccontextmanager
async def running_agent(
    site: Path, state: Path, broker: BrokerSettings, poll: bool = True
) -> AsyncIterator[EdgeAgent]:
    """An edge agent for `site`, running in this event loop (its control API off)."""
    settings = EdgeSettings(state_dir=state, mqtt=broker, publish_linger_s=0.05)
    agent = EdgeAgent(settings, load_site(site))
    running = asyncio.create_task(agent.run(poll=poll, control=False))
    try:
        yield agent
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        agent.close()
