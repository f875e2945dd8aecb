"""The demo line: a simulated Modbus controller read by a real edge agent, published to
the project's broker, ingested by a collector into TimescaleDB, and read back over the API.

The collector keeps running afterwards so the batch can be looked at; `make stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings
from device_profiles import LIBRARY
from device_profiles.schema import ModbusTcpProfile, load_profile
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.modbus.simulator import ModbusSimulator, run_reactor_process
from tracectl.__main__ import print_parameters

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("TRACE_SERVICES_DIR", ROOT / ".services"))
SITE = ROOT / "deploy" / "demo" / "site.yaml"


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


def _spawn_collector() -> subprocess.Popen[bytes]:
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / "collector.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud_collector", "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
    (STATE / "collector.pid").write_text(str(proc.pid))
    return proc


async def ensure_collector(settings: CollectorSettings) -> str:
    """A collector answering on the API port: the one already running, or a new one."""
    url = f"http://{settings.api_host}:{settings.api_port}"
    if await _healthy(url):
        return url
    proc = _spawn_collector()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"the collector exited with {proc.returncode}; see {STATE / 'collector.log'}"
            )
        if await _healthy(url):
            return url
        await asyncio.sleep(0.2)
    raise SystemExit(f"the collector did not answer on {url}; see {STATE / 'collector.log'}")


async def run_demo(seconds: float) -> None:
    collector = CollectorSettings()
    migrate(collector.database_url)
    api = await ensure_collector(collector)
    print(
        f"collector: API on {api}, ingesting from mqtt://{collector.mqtt.host}:{collector.mqtt.port}"
    )

    profile = load_profile(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")
    assert isinstance(profile, ModbusTcpProfile)
    edge = EdgeSettings(site=SITE, state_dir=STATE / "demo-edge")
    site = load_site(SITE)
    agent = EdgeAgent(edge, site)
    line = site.line_ids[0]
    batch_id = "DEMO-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    device = site.devices[line][0]
    assert isinstance(device, ModbusTcpProfile)
    sim = ModbusSimulator(profile, port=device.connection.port)
    async with sim:
        process = asyncio.create_task(run_reactor_process(sim, period_s=0.2))
        running = asyncio.create_task(agent.run())
        try:
            if (active := agent.context.active(line)) is not None:  # left by an interrupted demo
                agent.binder.end_batch(line, "tracectl demo")
                print(f"ended batch {active.batch_id} left running by an earlier demo")
            agent.binder.start_batch(line, batch_id, "tracectl demo")
            print(
                f"edge {site.edge_id}: batch {batch_id} started on {line}; "
                f"capturing {seconds:.0f}s ..."
            )
            await asyncio.sleep(seconds)
            agent.binder.end_batch(line, "tracectl demo")
            async with asyncio.timeout(30):
                while sum(agent.outbox.depth(s) for s in agent.outbox.streams()):
                    await asyncio.sleep(0.1)
        finally:
            for task in (running, process):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            agent.close()

    async with httpx.AsyncClient(base_url=api, timeout=10) as client:
        body = (await client.get(f"/api/v1/batches/{batch_id}/parameters")).json()
    print()
    print_parameters(body)
    print()
    print(f"Look at it: {api}/api/v1/batches/{batch_id}/parameters")
    print(f"            {api}/docs  (the API, interactive)")
    print("The collector keeps running; `make stop` stops it and the services.")
