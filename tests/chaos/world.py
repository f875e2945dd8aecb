"""The chaos tests' world: a private PostgreSQL cluster with TimescaleDB, collector and edge
agent processes (the real `cloud-collector` and `edge-agent`, started as a plant runs them),
and counting Modbus devices the edges poll. Each piece can be killed, stopped and started
again; nothing here touches the shared services of the other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from cloud_collector.migrate import migrate
from device_profiles.schema import ModbusTcpProfile, parse_profile
from protocols.modbus.simulator import ModbusSimulator
from protocols.mqtt.connection import BrokerSettings
from tests.chaos.reconcile import DeviceLedger
from tests.conftest import ROOT, free_port

LINE = "line-1"
COUNTER = "counter"
DEVICE = "counter-plc"


def _pg_bin() -> Path:
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not versions:
        raise RuntimeError(
            "no PostgreSQL server under /usr/lib/postgresql: run deploy/services.sh up"
        )
    return versions[-1] / "bin"


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as the `postgres` user then (as services.sh does)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresCluster:
    """A PostgreSQL cluster of the chaos tests' own, started the way deploy/services.sh
    starts the project's (initdb with trust, TimescaleDB preloaded, 127.0.0.1 only) on a
    free port in a folder of its own, so that it can be stopped under a running collector."""

    def __init__(self, port: int | None = None) -> None:
        self.bin = _pg_bin()
        self.port = port or free_port()
        # Under /tmp: the postgres user must reach it, and a checkout may sit in a private home.
        self.folder = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "trace",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )

    def _run(self, cmd: list[str]) -> None:
        proc = subprocess.run(
            _as_postgres(cmd), capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")

    def url(self, database: str = "postgres", application: str | None = None) -> str:
        url = f"postgresql://trace@127.0.0.1:{self.port}/{database}"
        return f"{url}?application_name={application}" if application else url

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
            " -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
            " -c max_connections=100"
        )
        pg_ctl = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60"]
        self._run([*pg_ctl, "-l", str(self.log), "-o", options, "start"])

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: no checkpoint, crash recovery at the next start."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")
            conn.execute(f"create database {name}")
        url = self.url(name)
        migrate(url)
        return url

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def _process_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    # No settings file of the checkout's: everything this process knows is given here.
    env["TRACE_ENV_FILE"] = os.devnull
    return env | dict(extra)


def _mqtt_env(broker: BrokerSettings) -> dict[str, str]:
    return {
        "TRACE_MQTT_HOST": broker.host,
        "TRACE_MQTT_PORT": str(broker.port),
        "TRACE_MQTT_USERNAME": broker.username or "",
        "TRACE_MQTT_PASSWORD": broker.password or "",
    }


class CollectorProcess:
    """`python -m cloud_collector run`: ingest and the HTTP API in one process, as deployed."""

    def __init__(
        self,
        name: str,
        folder: Path,
        database_url: str,
        broker: BrokerSettings,
        share_group: str,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.api_port = free_port()
        self.log = folder / f"{name}.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.env = _process_env(
            {
                "TRACE_DATABASE_URL": database_url,
                "TRACE_API_PORT": str(self.api_port),
                "TRACE_SHARE_GROUP": share_group,
                **_mqtt_env(broker),
                **(extra_env or {}),
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cloud_collector", "run"],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=2) as client:
            r = await client.get(f"{self.api_url}/healthz")
            return r.status_code, r.json()

    async def ready(self, timeout: float = 60) -> None:
        """Until its consumer is subscribed and its database reachable."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"collector {self.name} exited; see {self.log}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                _, health = await self.healthz()
                consumer = health.get("consumer") or {}
                if consumer.get("broker_connected") and consumer.get("database_connected"):
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"collector {self.name} not ready within {timeout:.0f}s: {self.log}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def counting_profile(port: int, interval_s: float) -> dict[str, Any]:
    return {
        "profile_version": 1,
        "name": DEVICE,
        "protocol": "modbus_tcp",
        "connection": {"host": "127.0.0.1", "port": port, "timeout_s": 0.5},
        "poll_interval_s": interval_s,
        "tags": [
            {"name": COUNTER, "address": 0, "data_type": "uint32"},
            {"name": "temperature", "address": 2, "data_type": "float32", "unit": "Cel"},
        ],
    }


class CountingDevice:
    """A Modbus TCP controller whose `counter` register is the number of reads it has
    answered: what it produced is exactly 1..served."""

    def __init__(self, interval_s: float) -> None:
        self.port = free_port()
        self.interval_s = interval_s
        profile = parse_profile(counting_profile(self.port, interval_s))
        assert isinstance(profile, ModbusTcpProfile)
        self.sim = ModbusSimulator(profile, port=self.port)
        self.sim.set("temperature", 80.0)
        self.sim.on_read = self._count
        self._counter = itertools.count(1)
        self.served = 0

    def _count(self, function_code: int, address: int, count: int) -> None:
        self.served = next(self._counter)
        self.sim.set(COUNTER, self.served)

    async def start(self) -> None:
        await self.sim.start()

    async def stop(self) -> None:
        await self.sim.stop()


@dataclass
class EdgeProcess:
    """`python -m edge_agent` for a site of one line with one counting device."""

    edge_id: str
    folder: Path
    device: CountingDevice
    broker: BrokerSettings
    extra_env: Mapping[str, str] = field(default_factory=dict)
    ack_timeout_s: float = 2.0
    proc: subprocess.Popen[bytes] | None = None
    in_flight_at_kill: set[int] = field(default_factory=set)
    kills: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.control_port = free_port()
        profile = self.folder / f"{DEVICE}.yaml"
        profile.write_text(
            yaml.safe_dump(counting_profile(self.device.port, self.device.interval_s))
        )
        self.site = self.folder / "site.yaml"
        self.site.write_text(
            yaml.safe_dump(
                {
                    "edge_id": self.edge_id,
                    "lines": [{"id": LINE, "devices": [{"profile": str(profile)}]}],
                }
            )
        )
        self.log = self.folder / "agent.log"

    def env(self) -> dict[str, str]:
        return _process_env(
            {
                "TRACE_EDGE_STATE_DIR": str(self.folder / "state"),
                "TRACE_EDGE_CONTROL_PORT": str(self.control_port),
                # Every poll is on disk before the next: a kill loses at most the poll in
                # flight, which the injector names.
                "TRACE_EDGE_OUTBOX_COMMIT_INTERVAL_S": "0",
                "TRACE_EDGE_ACK_TIMEOUT_S": str(self.ack_timeout_s),
                "TRACE_EDGE_PUBLISH_LINGER_S": "0.05",
                "TRACE_EDGE_STATUS_INTERVAL_S": "2",
                **_mqtt_env(self.broker),
                **self.extra_env,
            }
        )

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "--site", str(self.site)],
                env=self.env(),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    async def kill(self, settle_s: float = 0.3) -> None:
        """SIGKILL; the values the device served to the dead process and that it could not
        have committed (the read in flight, and any request still in the device's socket)
        are named for the reconciliation."""
        assert self.proc is not None
        last = self.device.served
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.kills += 1
        await asyncio.sleep(settle_s)
        self.in_flight_at_kill |= set(range(last, self.device.served + 1)) - {0}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    async def status(self) -> dict[str, Any] | None:
        """The agent's control API status (no token needed from this PC), None when down."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                r = await client.get(f"{self.control_url}/api/v1/status")
                return r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    async def ready(self, timeout: float = 60) -> None:
        """Until it runs, reaches the broker and polls its device."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"edge {self.edge_id} exited; see {self.log}")
            status = await self.status()
            if (
                status
                and status["publisher"]["connected"]
                and status["devices"][DEVICE]["polls"] > 0
            ):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"edge {self.edge_id} not ready within {timeout:.0f}s: {self.log}")

    async def start_batch(self, batch_id: str) -> None:
        token = (self.folder / "state" / "control.token").read_text().strip()
        async with httpx.AsyncClient(
            timeout=5, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            r = await client.put(
                f"{self.control_url}/api/v1/lines/{LINE}/batch",
                json={"batch_id": batch_id, "by": "chaos"},
            )
        assert r.status_code == 201, r.text

    async def outbox_empty(self) -> bool:
        status = await self.status()
        if status is None:
            return False
        return all(s["depth"] == 0 for s in status["outbox"]["streams"].values())

    def ledger(self) -> DeviceLedger:
        return DeviceLedger(
            self.edge_id,
            DEVICE,
            COUNTER,
            self.device.served,
            frozenset(self.in_flight_at_kill),
            self.numbered(),
        )

    def numbered(self) -> tuple[str, int] | None:
        """(epoch, next sequence number) of its readings, read from its outbox file."""
        path = self.folder / "state" / "outbox.db"
        if not path.exists():
            return None
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            epoch = db.execute("select value from meta where key = 'epoch'").fetchone()
            row = db.execute("select next_seq from streams where stream = 'readings'").fetchone()
        return (epoch[0], int(row[0])) if epoch and row else None
