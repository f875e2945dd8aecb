"""`tracectl demo`, the newcomer's first contact: the first step that cannot go on stops it
with the reason and the fix, never a traceback (the database or the broker not where the
settings say, the API port taken by something that is not a collector)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, Services, free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def demo(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracectl", "demo", "--seconds", "1"],
        cwd=ROOT,
        env={**os.environ, "TRACE_ENV_FILE": "/nonexistent", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_no_database_where_the_settings_say() -> None:
    url = f"postgresql://trace@127.0.0.1:{free_port()}/traceability"
    done = demo(TRACE_DATABASE_URL=url)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert f"demo: stopped: cannot reach the database at {url} (TRACE_DATABASE_URL)" in done.stderr
    assert "demo: fix:" in done.stderr and "make demo" in done.stderr
    assert "collector:" not in done.stdout


def test_no_broker_where_the_settings_say(services: Services) -> None:
    port = free_port()
    done = demo(TRACE_DATABASE_URL=services.database_url, TRACE_MQTT_PORT=str(port))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert f"no MQTT broker answers at mqtt://127.0.0.1:{port}" in done.stderr
    assert "TRACE_MQTT_PORT" in done.stderr and "demo: fix:" in done.stderr


def test_the_api_port_taken_by_another_program(services: Services, taken_port: int) -> None:
    broker = services.broker
    done = demo(
        TRACE_DATABASE_URL=services.database_url,
        TRACE_MQTT_PORT=str(broker.port),
        TRACE_MQTT_USERNAME=broker.username or "",
        TRACE_MQTT_PASSWORD=broker.password or "",
        TRACE_API_PORT=str(taken_port),
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert f"API port {taken_port} is taken by" in done.stderr
    assert f"(pid {os.getpid()})" in done.stderr
    assert f"export TRACE_API_PORT={taken_port + 1}" in done.stderr
