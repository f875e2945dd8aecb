"""deploy/mosquitto/production.conf, run as shipped (only its paths and port moved into a
test folder): TLS with client certificates and passwords, identities from the registry,
an edge agent and a collector end to end through it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import psycopg
import pytest
import yaml

from cloud_collector import broker_identities
from cloud_collector.broker_identities import BrokerFiles, IdentityKind
from cloud_collector.consumer import IngestCounters, run_consumer
from cloud_collector.settings import CollectorSettings
from edge_agent.runtime import EdgeAgent
from protocols.mqtt.connection import BrokerSettings
from tests.conftest import (
    ROOT,
    Services,
    TlsFiles,
    broker_accepts,
    free_port,
    make_tls_files,
    running_agent,
    until,
)

PRODUCTION = ROOT / "deploy" / "mosquitto" / "production.conf"


def production_conf(folder: Path, port: int, tls: TlsFiles) -> str:
    """production.conf with each path and the TLS listener's port moved to `folder`."""
    moved = {
        "listener 8883": f"listener {port} 127.0.0.1",
        "cafile": f"cafile {tls.ca}",
        "certfile": f"certfile {tls.server_cert}",
        "keyfile": f"keyfile {tls.server_key}",
        "password_file": f"password_file {folder}/passwd",
        "acl_file": f"acl_file {folder}/acl",
        "pid_file": f"pid_file {folder}/mosquitto.pid",
        "persistence_location": f"persistence_location {folder}/",
        "log_dest": f"log_dest file {folder}/mosquitto.log",
    }
    lines = []
    for line in PRODUCTION.read_text().splitlines():
        key = "listener 8883" if line == "listener 8883" else line.split(" ", 1)[0]
        lines.append(moved.pop(key, line))
    assert not moved, f"production.conf no longer has {sorted(moved)}"
    if os.geteuid() == 0:
        lines.append("user root")  # the test's folder is private to root
    return "\n".join(lines) + "\n"


@pytest.fixture
def production_broker(tmp_path: Path) -> Iterator[tuple[int, TlsFiles, BrokerFiles]]:
    folder = tmp_path / "broker"
    folder.mkdir()
    tls = make_tls_files(tmp_path / "tls")
    port = free_port()
    (folder / "mosquitto.conf").write_text(production_conf(folder, port, tls))
    files = BrokerFiles(
        password_file=folder / "passwd", acl_file=folder / "acl", pid_file=folder / "mosquitto.pid"
    )
    (folder / "passwd").write_text("")
    (folder / "acl").write_text("")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(folder / "mosquitto.conf")])
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                log = folder / "mosquitto.log"
                raise RuntimeError(
                    f"production.conf did not start: {log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.05)
        while not files.pid_file.exists():  # type: ignore[union-attr]
            time.sleep(0.05)
        yield port, tls, files
    finally:
        proc.terminate()
        proc.wait(10)


async def _register(
    services: Services, files: BrokerFiles, name: str, kind: IdentityKind
) -> broker_identities.IssuedIdentity:
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        issued = await broker_identities.issue(c, name, kind, "tls test", rotate=True)
        await broker_identities.update_broker(c, files)
    return issued


@contextlib.asynccontextmanager
async def consuming(settings: CollectorSettings) -> AsyncIterator[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(run_consumer(settings, IngestCounters(), ready))
    try:
        async with asyncio.timeout(15):
            await ready.wait()
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_edge_and_collector_over_tls_with_certificates_and_passwords(
    tmp_path: Path, services: Services, production_broker: tuple[int, TlsFiles, BrokerFiles]
) -> None:
    port, tls, files = production_broker
    edge_id, collector_name = f"edge-{uuid.uuid4().hex[:8]}", f"coll-{uuid.uuid4().hex[:8]}"
    edge = await _register(services, files, edge_id, IdentityKind.edge)
    coll = await _register(services, files, collector_name, IdentityKind.collector)
    certificate = {
        "tls_ca_file": tls.ca,
        "tls_cert_file": tls.client_cert,
        "tls_key_file": tls.client_key,
    }
    edge_broker = BrokerSettings(
        host="127.0.0.1", port=port, username=edge.name, password=edge.password, **certificate
    )
    collector_broker = edge_broker.model_copy(
        update={"username": coll.name, "password": coll.password}
    )
    await until(lambda: broker_accepts(collector_broker), 10, "the TLS broker accepting")

    # Each factor alone is refused: no client certificate; no password; no TLS at all.
    no_cert = edge_broker.model_copy(update={"tls_cert_file": None, "tls_key_file": None})
    assert not await broker_accepts(no_cert)
    assert not await broker_accepts(edge_broker.model_copy(update={"password": "wrong"}))
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", port, username=edge.name, password=edge.password, timeout=3
        ):
            pass

    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"edge_id": edge_id, "lines": [{"id": "line-1"}]}))
    batch = f"B-{uuid.uuid4().hex[:8]}"
    collector = CollectorSettings(
        database_url=services.database_url,
        collector_id=coll.name,
        share_group=f"tls-{uuid.uuid4().hex[:6]}",
        mqtt=collector_broker,
    )

    async def batch_stored() -> bool:
        async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
            cur = await conn.execute(
                "select started_by from batches where batch_id = %s and edge_id = %s",
                (batch, edge_id),
            )
            return await cur.fetchone() == ("op-tls",)

    async with consuming(collector), running_agent(site, tmp_path / "edge", edge_broker) as agent:
        agent.binder.start_batch("line-1", batch, "op-tls")
        await until(batch_stored, 20, "the batch start carried over TLS into the database")
        await until(lambda: _acked(agent), 10, "the collector's ack back to the edge over TLS")
    log = (Path(str(files.password_file)).parent / "mosquitto.log").read_text()
    assert re.search(rf"New client connected .* as {edge_id} ", log)


async def _acked(agent: EdgeAgent) -> bool:
    return agent.outbox.stats().depth == 0
