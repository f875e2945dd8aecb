"""deploy/services.sh and `make demo` when a port the local services need is taken (another
checkout's services, a local PostgreSQL): they stop at once, name the process that holds
the port and the setting that moves it, and the demo does not start."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: the postgres user must reach it (root runs the cluster
    # as postgres, and pytest's folders are private to root).
    folder = Path(tempfile.mkdtemp(prefix="trace-services-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port this test process listens on, as another program would."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def services(
    state: Path, pg_port: int, mqtt_port: int, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TRACE_SERVICES_DIR": str(state),
        "TRACE_SERVICES_PG_PORT": str(pg_port),
        "TRACE_SERVICES_MQTT_PORT": str(mqtt_port),
    }
    return subprocess.run(
        ["bash", str(ROOT / "deploy" / "services.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_postgres_port_taken_names_the_process_and_the_setting(
    state_dir: Path, taken_port: int
) -> None:
    done = services(state_dir, taken_port, free_port(), "up")
    assert done.returncode == 1
    assert f"127.0.0.1:{taken_port}: the port is taken by" in done.stderr
    assert f"(pid {os.getpid()})" in done.stderr  # this test's process holds it
    assert "export TRACE_SERVICES_PG_PORT=" in done.stderr
    assert "export TRACE_" not in done.stdout  # nothing for a caller to eval
    assert "starting PostgreSQL" not in done.stderr


def test_mqtt_port_taken_names_the_process_and_the_setting(
    state_dir: Path, taken_port: int
) -> None:
    pg_port = free_port()
    try:
        done = services(state_dir, pg_port, taken_port, "up")
        assert done.returncode == 1
        assert f"Mosquitto cannot listen on 127.0.0.1:{taken_port}" in done.stderr
        assert f"(pid {os.getpid()})" in done.stderr
        assert "export TRACE_SERVICES_MQTT_PORT=" in done.stderr
        assert "export TRACE_" not in done.stdout
    finally:
        services(state_dir, pg_port, taken_port, "down")


def test_make_demo_stops_at_the_taken_port_without_a_traceback(
    state_dir: Path, taken_port: int
) -> None:
    """The issue's case: before, the demo went on with a collector pointed at the default
    broker and ended in a TimeoutError traceback half a minute later."""
    env = {
        **os.environ,
        "TRACE_SERVICES_DIR": str(state_dir),
        "TRACE_SERVICES_PG_PORT": str(taken_port),
        "TRACE_SERVICES_MQTT_PORT": str(free_port()),
    }
    done = subprocess.run(
        ["make", "-s", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert "TRACE_SERVICES_PG_PORT" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "collector:" not in done.stdout  # the demo itself never started
