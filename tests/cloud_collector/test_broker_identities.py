"""The registry of broker identities: Mosquitto-compatible hashes, issue/rotate/revoke,
the files rendered from it, `accepts_edge`, and `tracectl edge` driving a real broker."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from cloud_collector import broker_identities as registry
from cloud_collector.broker_identities import (
    BrokerIdentity,
    BrokerIdentityError,
    IdentityKind,
)
from tests.conftest import ROOT, Services, broker_accepts, until


def test_hash_is_the_one_mosquitto_passwd_makes(tmp_path: Path) -> None:
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run(
        [binary, "-b", "-c", str(tmp_path / "pw"), "alice", "s3cret"], check=True, timeout=10
    )
    theirs = (tmp_path / "pw").read_text().strip().split(":", 1)[1]
    rounds, salt = theirs.split("$")[2:4]
    ours = registry.password_hash("s3cret", base64.b64decode(salt), int(rounds))
    assert ours == theirs
    assert registry.password_matches("s3cret", theirs)
    assert not registry.password_matches("s3cret!", theirs)


@pytest.mark.parametrize("name", ["", "a/b", "line+1", "x#", "plant:line-1", "a b", "é", "x" * 65])
def test_names_that_cannot_be_a_username_or_topic_level_are_refused(name: str) -> None:
    with pytest.raises(BrokerIdentityError, match="cannot be a broker identity"):
        registry.check_name(name)


async def test_accepts_edge_only_once_the_registry_is_in_use(services: Services) -> None:
    connect = psycopg.AsyncConnection.connect
    # Inside one transaction that is rolled back: the session's other identities stay.
    async with await connect(services.database_url) as conn, conn.transaction(force_rollback=True):
        await conn.execute("delete from broker_identities where kind = 'edge'")
        assert await registry.accepts_edge(conn, "line-a")  # registry not in use yet
        await registry.issue(conn, "collector-x", IdentityKind.collector)
        assert await registry.accepts_edge(conn, "line-a")  # collectors do not turn it on
        await registry.issue(conn, "line-a", IdentityKind.edge)
        assert await registry.accepts_edge(conn, "line-a")
        assert not await registry.accepts_edge(conn, "line-b")
        assert not await registry.accepts_edge(conn, "collector-x")  # not an edge
        assert await registry.revoke(conn, "line-a", IdentityKind.edge)
        assert not await registry.accepts_edge(conn, "line-a")  # revoked: in use, refused


async def test_issue_rotate_and_revoke(services: Services) -> None:
    name = f"edge-{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        first = await registry.issue(conn, name, IdentityKind.edge, "line 4 PC")
        with pytest.raises(BrokerIdentityError, match="in force already"):
            await registry.issue(conn, name, IdentityKind.edge)
        with pytest.raises(BrokerIdentityError, match="is a edge identity in force"):
            await registry.issue(conn, name, IdentityKind.collector, rotate=True)
        second = await registry.issue(conn, name, IdentityKind.edge, rotate=True)
        assert first.password != second.password and len(second.password) >= 32
        everything = await registry.list_identities(conn, revoked=True)
        mine = [i for i in everything if i.name == name]
        assert [i.revoked_at is None for i in mine] == [False, True]
        in_force = next(i for i in mine if i.revoked_at is None)
        assert registry.password_matches(second.password, in_force.password_hash)
        assert not registry.password_matches(first.password, in_force.password_hash)
        assert await registry.revoke(conn, name)
        assert not await registry.revoke(conn, name)
        assert name not in {i.name for i in await registry.list_identities(conn)}


def _identity(name: str, kind: IdentityKind, revoked: bool = False) -> BrokerIdentity:
    now = datetime.now(UTC)
    return BrokerIdentity(
        name, kind, registry.password_hash("pw"), now, now if revoked else None, None
    )


def test_rendered_files_give_each_identity_only_its_own_topics() -> None:
    identities = [
        _identity("coll-1", IdentityKind.collector),
        _identity("line-1", IdentityKind.edge),
        _identity("line-2", IdentityKind.edge, revoked=True),
    ]
    passwords = registry.render_password_file(identities)
    assert re.findall(r"^([^#:]+):\$7\$", passwords, re.MULTILINE) == ["coll-1", "line-1"]
    acl = registry.render_acl_file(identities)
    blocks = {
        b.split("\n", 1)[0]: b.split("\n")[1:] for b in re.split(r"^user ", acl, flags=re.M)[1:]
    }
    assert set(blocks) == {"coll-1", "line-1"}  # revoked: no block, so no rights
    assert [x for x in blocks["line-1"] if x.startswith("topic")] == [
        "topic write trace/v1/edges/line-1/data/+",
        "topic write trace/v1/edges/line-1/status",
        "topic read trace/v1/edges/line-1/ack",
        "topic read trace/v1/edges/line-1/config/#",
        "topic read trace/v1/collectors/+/status",
        "topic read trace/v1/holds",
        "topic read trace/v1/edges/line-1/probe/request",
        "topic write trace/v1/edges/line-1/probe/result",
    ]
    assert [x for x in blocks["coll-1"] if x.startswith("topic")] == [
        "topic read trace/v1/edges/+/data/+",
        "topic read trace/v1/edges/+/status",
        "topic write trace/v1/edges/+/ack",
        "topic write trace/v1/collectors/coll-1/status",
        "topic write trace/v1/holds",
        "topic write trace/v1/edges/+/config/#",  # site versions pushed to edges
        "topic write trace/v1/edges/+/probe/request",  # probes asked through an edge
        "topic read trace/v1/edges/+/probe/result",
    ]


def test_a_base_identity_may_not_also_be_in_the_registry(tmp_path: Path) -> None:
    base = "collector-local:" + registry.password_hash("pw") + "\n"
    with pytest.raises(BrokerIdentityError, match="in the registry and in"):
        registry.render_password_file(
            [_identity("collector-local", IdentityKind.collector)], base, tmp_path / "base"
        )
    with pytest.raises(BrokerIdentityError, match="not a Mosquitto 2 password line"):
        registry.render_password_file([], "someone:plaintext\n", tmp_path / "base")


def test_files_are_replaced_whole_keeping_owner_group_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    registry.write_atomically(path, "one\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    path.chmod(0o600)
    registry.write_atomically(path, "two\n")
    assert path.read_text() == "two\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["passwd"]  # no temporary file left


def test_reload_refuses_a_stale_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(str(os.getpid()))  # this pytest process: not a broker
    with pytest.raises(BrokerIdentityError, match="not a mosquitto process"):
        registry.reload_broker(pid_file)
    with pytest.raises(BrokerIdentityError, match="does not exist"):
        registry.reload_broker(tmp_path / "none.pid")


def _tracectl(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    files = services.broker_files
    env = {
        **os.environ,
        "TRACE_DATABASE_URL": services.database_url,
        "TRACE_BROKER_PASSWORD_FILE": str(files.password_file),
        "TRACE_BROKER_ACL_FILE": str(files.acl_file),
        "TRACE_BROKER_PID_FILE": str(files.pid_file),
        "TRACE_BROKER_BASE_PASSWORD_FILE": str(files.base_password_file),
        "TRACE_BROKER_BASE_ACL_FILE": str(files.base_acl_file),
    }
    return subprocess.run(
        [sys.executable, "-m", "tracectl", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_tracectl_edge_add_lets_the_edge_in_and_revoke_shuts_it_out(
    services: Services,
) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    added = _tracectl(services, "edge", "add", edge, "--comment", "line 9 PC")
    assert added.returncode == 0, added.stderr
    printed = dict(line.split("=", 1) for line in added.stdout.splitlines())
    assert printed["TRACE_MQTT_USERNAME"] == edge
    assert "shown only once" in added.stderr and "reloaded" in added.stderr
    broker = services.broker.model_copy(
        update={"username": edge, "password": printed["TRACE_MQTT_PASSWORD"]}
    )
    await until(lambda: broker_accepts(broker), 10, "the broker accepting the new edge")

    listed = _tracectl(services, "edge", "list")
    assert re.search(rf"^{edge}\s+edge\s.*line 9 PC$", listed.stdout, re.MULTILINE)
    assert printed["TRACE_MQTT_PASSWORD"] not in listed.stdout

    again = _tracectl(services, "edge", "add", edge)
    assert again.returncode == 1 and "in force already" in again.stderr

    revoked = _tracectl(services, "edge", "revoke", edge)
    assert revoked.returncode == 0, revoked.stderr

    async def refused() -> bool:
        return not await broker_accepts(broker)

    await until(refused, 10, "the broker refusing the revoked edge")
    gone = _tracectl(services, "edge", "revoke", edge)
    assert gone.returncode == 1 and "no edge identity" in gone.stderr

    bad = _tracectl(services, "edge", "add", "plant:line-1")
    assert bad.returncode == 1 and "cannot be a broker identity" in bad.stderr


def test_tracectl_broker_adds_a_collector_and_renders_the_files(services: Services) -> None:
    name = f"coll-{uuid.uuid4().hex[:8]}"
    assert _tracectl(services, "broker", "add", name).returncode == 2  # --kind is required
    added = _tracectl(services, "broker", "add", name, "--kind", "collector")
    assert added.returncode == 0, added.stderr
    acl = Path(str(services.broker_files.acl_file)).read_text()
    assert f"user {name}\ntopic read trace/v1/edges/+/data/+\n" in acl
    listed = _tracectl(services, "broker", "list", "--kind", "collector")
    assert name in listed.stdout and "edge " not in listed.stdout
    rendered = _tracectl(services, "broker", "files")
    assert rendered.returncode == 0 and "identities written to" in rendered.stdout
    assert _tracectl(services, "broker", "revoke", name).returncode == 0
    assert f"user {name}\n" not in Path(str(services.broker_files.acl_file)).read_text()
