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
from protocols.mqtt import topics
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


def production_conf(
    folder: Path, port: int, tls: TlsFiles, identity_from_certificate: bool = False
) -> str:
    """production.conf with each path and the TLS listener's port moved to `folder`; with
    `identity_from_certificate`, its commented option `use_identity_as_username` on."""
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
    if identity_from_certificate:
        moved["#use_identity_as_username"] = "use_identity_as_username true"
    lines = []
    for line in PRODUCTION.read_text().splitlines():
        key = "listener 8883" if line == "listener 8883" else line.split(" ", 1)[0]
        lines.append(moved.pop(key, line))
    assert not moved, f"production.conf no longer has {sorted(moved)}"
    if os.geteuid() == 0:
        lines.append("user root")  # the test's folder is private to root
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def start_production_broker(
    tmp_path: Path,
    clients: tuple[str, ...] = ("trace-client",),
    identity_from_certificate: bool = False,
) -> Iterator[tuple[int, TlsFiles, BrokerFiles]]:
    folder = tmp_path / "broker"
    folder.mkdir()
    tls = make_tls_files(tmp_path / "tls", clients)
    port = free_port()
    (folder / "mosquitto.conf").write_text(
        production_conf(folder, port, tls, identity_from_certificate)
    )
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


@pytest.fixture
def production_broker(tmp_path: Path) -> Iterator[tuple[int, TlsFiles, BrokerFiles]]:
    with start_production_broker(tmp_path) as broker:
        yield broker


def _client(settings: BrokerSettings) -> aiomqtt.Client:
    return aiomqtt.Client(**settings.client_args(), protocol=aiomqtt.ProtocolVersion.V5)  # type: ignore[arg-type]


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


async def test_the_certificate_can_be_the_identity(tmp_path: Path, services: Services) -> None:
    """production.conf's option use_identity_as_username: the certificate's CN is the
    username (no password), and the registry's ACL block for that name still applies."""
    edge_id, collector_name = f"edge-{uuid.uuid4().hex[:8]}", f"coll-{uuid.uuid4().hex[:8]}"
    with start_production_broker(
        tmp_path, (edge_id, collector_name), identity_from_certificate=True
    ) as (port, tls, files):
        await _register(services, files, edge_id, IdentityKind.edge)
        await _register(services, files, collector_name, IdentityKind.collector)

        def by_certificate(cn: str) -> BrokerSettings:
            cert, key = tls.clients[cn]
            return BrokerSettings(
                host="127.0.0.1",
                port=port,
                tls_ca_file=tls.ca,
                tls_cert_file=cert,
                tls_key_file=key,
            )

        edge, collector = by_certificate(edge_id), by_certificate(collector_name)
        await until(lambda: broker_accepts(collector), 10, "the broker taking the certificate")
        async with _client(collector) as reader:
            await reader.subscribe(topics.data_subscription("g"), qos=1)
            with contextlib.suppress(aiomqtt.MqttError):  # a denied QoS 1 publish ends it
                async with _client(edge) as client:
                    await client.publish(topics.data("other", "readings"), b"forged", qos=1)
            async with _client(edge) as client:
                await client.publish(topics.data(edge_id, "readings"), b"mine", qos=1)
            async with asyncio.timeout(5):
                async for message in reader.messages:
                    got = (str(message.topic), message.payload)
                    assert got == (topics.data(edge_id, "readings"), b"mine")
                    break
        log = (tmp_path / "broker" / "mosquitto.log").read_text()
        assert f"as {edge_id} " in log and f"u'{edge_id}'" in log
