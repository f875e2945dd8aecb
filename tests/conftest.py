"""Session fixtures: the project's own broker and database, started (or reused) by
deploy/services.sh. A service that cannot start fails the run with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import aiomqtt
import httpx
import psycopg
import pytest
import uvicorn

from cloud_collector import auth, broker_identities
from cloud_collector.api import create_app
from cloud_collector.broker_identities import BrokerFiles, BrokerIdentity, IdentityKind
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
    # The local broker's files, rendered from the test database's registry of identities.
    broker_files: BrokerFiles
    # A collector identity for tests' own clients (it may read every edge's data and status
    # and publish acks). To publish as an edge, `await services.register(edge_id)`.
    broker: BrokerSettings
    # The identity of the session's running collector (fixture `collector`): its own, so a
    # test's client never takes over the consumer's session.
    consumer_broker: BrokerSettings

    def as_identity(self, identity: broker_identities.IssuedIdentity) -> BrokerSettings:
        return BrokerSettings(
            host=self.mqtt_host,
            port=self.mqtt_port,
            username=identity.name,
            password=identity.password,
        )

    async def register(
        self, name: str, kind: IdentityKind = IdentityKind.edge, comment: str | None = None
    ) -> BrokerSettings:
        """Register a broker identity in the test registry (replacing one of that name),
        put it into the broker's files, and return its settings once the broker takes them."""
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True
        ) as conn:
            issued = await broker_identities.issue(conn, name, kind, comment, rotate=True)
            await broker_identities.update_broker(conn, self.broker_files)
        settings = self.as_identity(issued)
        await until(lambda: broker_accepts(settings), 10, f"the broker accepting {name}")
        return settings


async def broker_accepts(settings: BrokerSettings) -> bool:
    """Whether the broker lets `settings` connect (it re-reads its files after SIGHUP, a
    moment after the signal). Connects as that identity: never while it is in use."""
    try:
        async with aiomqtt.Client(
            **settings.client_args(),  # type: ignore[arg-type]
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=2,
        ):
            return True
    except aiomqtt.MqttError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _services_up() -> tuple[dict[str, str], str]:
    """deploy/services.sh up: its `export` lines, and the test database, fresh and migrated."""
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
    return env, url


@pytest.fixture(scope="session")
async def services() -> Services:
    env, url = _services_up()
    files = BrokerFiles(
        password_file=env["TRACE_BROKER_PASSWORD_FILE"],
        acl_file=env["TRACE_BROKER_ACL_FILE"],
        pid_file=env["TRACE_BROKER_PID_FILE"],
        base_password_file=env["TRACE_BROKER_BASE_PASSWORD_FILE"],
        base_acl_file=env["TRACE_BROKER_BASE_ACL_FILE"],
    )
    host, port = env["TRACE_MQTT_HOST"], int(env["TRACE_MQTT_PORT"])
    # The services' own collector identity (base files) until this session has its own.
    local = BrokerSettings(
        host=host,
        port=port,
        username=env["TRACE_MQTT_USERNAME"],
        password=env["TRACE_MQTT_PASSWORD"],
    )
    bootstrap = Services(host, port, url, files, local, local)
    tests = await bootstrap.register(f"tests-{os.getpid()}", IdentityKind.collector)
    consumer = await bootstrap.register(f"collector-test-{os.getpid()}", IdentityKind.collector)
    return Services(host, port, url, files, tests, consumer)


@pytest.fixture(scope="session")
def collector_settings(services: Services) -> CollectorSettings:
    return CollectorSettings(
        database_url=services.database_url,
        api_port=free_port(),
        # Its MQTT client id is its broker identity (use_username_as_clientid).
        collector_id=f"collector-test-{os.getpid()}",
        # A group of its own: a demo collector on the same broker never takes test messages.
        share_group=f"collectors-test-{os.getpid()}",
        mqtt=services.consumer_broker,
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
        # A generous timeout: a slow CI machine must not turn a heavy request into a failure.
        return httpx.AsyncClient(base_url=self.api_url, headers=self.headers(role), timeout=60)


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


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # of the first client
    client_key: Path
    clients: dict[str, tuple[Path, Path]]  # CN -> (certificate, key)


def make_tls_files(folder: Path, clients: Sequence[str] = ("trace-client",)) -> TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate for each
    CN in `clients`, all signed by that CA, as PEM files in `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def write_cert(path: Path, cert: x509.Certificate) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("trace test CA"))
        .issuer_name(name("trace test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier) -> tuple[x509.Certificate, object]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH)
    issued = {}
    for n, cn in enumerate(clients):
        cert, key = leaf(cn, ExtendedKeyUsageOID.CLIENT_AUTH)
        issued[cn] = (
            write_cert(folder / f"client-{n}.pem", cert),
            write_key(folder / f"client-{n}.key", key),  # type: ignore[arg-type]
        )
    first = issued[clients[0]]
    return TlsFiles(
        ca=write_cert(folder / "ca.pem", ca_cert),
        server_cert=write_cert(folder / "server.pem", server_cert),
        server_key=write_key(folder / "server.key", server_key),  # type: ignore[arg-type]
        client_cert=first[0],
        client_key=first[1],
        clients=issued,
    )


class MosquittoProcess:
    """A broker of a test's own, on its own port and folder, that the test can stop and start
    (the outage tests must not take the shared broker away from the other tests). It runs
    the production rules: credentials required, ACLs rendered by cloud_collector's
    broker_identities from identities the test registers (`register`); optionally TLS."""

    def __init__(
        self, folder: Path, tls: TlsFiles | None = None, registry_url: str | None = None
    ) -> None:
        # The collector takes data only from edges of its registry once it is in use (the
        # test database's is): an edge of this broker is entered there too.
        self.registry_url = registry_url
        self.folder = folder
        self.port = free_port()
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.identities: list[BrokerIdentity] = []
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {folder}/passwd",
            f"acl_file {folder}/acl",
            "use_username_as_clientid true",
            "persistence true",
            f"persistence_location {folder}/",
            "max_queued_messages 0",
            f"log_dest file {folder}/mosquitto.log",
        ]
        if tls is not None:
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                "require_certificate true",
            ]
        if os.geteuid() == 0:
            lines.append("user root")  # the test's folder is private to root
        (folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")
        self._settings = BrokerSettings(host="127.0.0.1", port=self.port)
        self.broker = self.register_now("collector-private", IdentityKind.collector)

    def register_now(self, name: str, kind: IdentityKind = IdentityKind.edge) -> BrokerSettings:
        """Add an identity and rewrite the files; a running broker sees it after `reload`."""
        password = secrets.token_urlsafe(24)
        self.identities = [i for i in self.identities if i.name != name]
        self.identities.append(
            BrokerIdentity(name, kind, broker_identities.password_hash(password), datetime.now(UTC))
        )
        self._write_files()
        tls = {}
        if self.tls is not None:
            tls = {
                "tls_ca_file": self.tls.ca,
                "tls_cert_file": self.tls.client_cert,
                "tls_key_file": self.tls.client_key,
            }
        return BrokerSettings(
            host="127.0.0.1", port=self.port, username=name, password=password, **tls
        )

    async def register(self, name: str, kind: IdentityKind = IdentityKind.edge) -> BrokerSettings:
        """Add an identity and return its settings once the running broker accepts them."""
        settings = self.register_now(name, kind)
        if self.registry_url is not None and kind is IdentityKind.edge:
            async with await psycopg.AsyncConnection.connect(
                self.registry_url, autocommit=True
            ) as conn:
                await broker_identities.issue(conn, name, kind, "private test broker", rotate=True)
        self.reload()
        await until(lambda: broker_accepts(settings), 10, f"the private broker accepting {name}")
        return settings

    def revoke(self, name: str) -> None:
        self.identities = [i for i in self.identities if i.name != name]
        self._write_files()
        self.reload()

    def _write_files(self) -> None:
        broker_identities.write_atomically(
            self.folder / "passwd", broker_identities.render_password_file(self.identities)
        )
        broker_identities.write_atomically(
            self.folder / "acl", broker_identities.render_acl_file(self.identities)
        )

    def reload(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

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
def private_broker(tmp_path: Path, services: Services) -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(tmp_path / "mosquitto", registry_url=services.database_url)
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
