"""Device tasks: a device that goes away is reconnected without losing the task."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from device_profiles import LIBRARY
from device_profiles.schema import load_profile
from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.capture import DeviceTask
from edge_agent.outbox import EVENTS, READINGS, Outbox
from edge_agent.store import EdgeStore
from protocols.driver import Sample
from protocols.modbus.client import ModbusDriver
from protocols.modbus.simulator import ModbusSimulator
from tests.conftest import free_port


async def test_polling_survives_a_device_restart(tmp_path: Path) -> None:
    port = free_port()
    profile = load_profile(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")
    profile = profile.model_copy(
        update={
            "connection": profile.connection.model_copy(update={"port": port, "timeout_s": 0.5})
        }
    )
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    task = DeviceTask(
        "line-1",
        ModbusDriver(profile),
        0.05,
        Binder(BatchContext(outbox.store, ["line-1"]), outbox),
    )
    sim = ModbusSimulator(profile, port=port)
    await sim.start()
    sim.set("temperature", 50.0)
    running = asyncio.create_task(task.run())
    try:
        async with asyncio.timeout(10):
            while outbox.depth(READINGS) < 8:
                await asyncio.sleep(0.02)
        await sim.stop()
        async with asyncio.timeout(10):
            while task.health.failures == 0:
                await asyncio.sleep(0.02)
        assert not task.health.connected and "tp-controller-1" in (task.health.last_error or "")
        sim = ModbusSimulator(profile, port=port)
        await sim.start()
        sim.set("temperature", 60.0)
        async with asyncio.timeout(20):
            while not any(json.loads(b)["value"] == 60.0 for _, b in outbox.take(READINGS, 10_000)):
                await asyncio.sleep(0.05)
        assert task.health.connected
        # The gap is recorded: offline with the reason, then online again.
        events = [json.loads(b) for _, b in outbox.take(EVENTS, 10)]
        assert [e["kind"] for e in events] == ["device_offline", "device_online"]
        assert "tp-controller-1" in events[0]["detail"]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await task.driver.close()
        await sim.stop()


class SwallowingDriver(ModbusDriver):
    """Answers each read as Python 3.11's asyncio.wait_for does when the reply and a cancel
    arrive in the same loop turn: the cancel is swallowed and the reply returned."""

    async def open(self) -> None:
        pass

    async def read(self) -> list[Sample]:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)
        return [Sample(tag="temperature", value=1.0, unit="degC")]


async def test_a_device_task_stops_when_cancelled_even_if_its_driver_swallows_the_cancel(
    tmp_path: Path,
) -> None:
    profile = load_profile(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")
    outbox = Outbox(EdgeStore(tmp_path / "o.db"))
    task = DeviceTask(
        "line-1",
        SwallowingDriver(profile),  # type: ignore[arg-type]
        0.01,
        Binder(BatchContext(outbox.store, ["line-1"]), outbox),
    )
    running = asyncio.create_task(task.run())
    async with asyncio.timeout(10):
        while task.health.readings < 3:
            await asyncio.sleep(0.01)
    for turn in range(20):  # whichever turn the cancel lands in, the task ends
        await asyncio.sleep(0.004 * (turn % 5))
        running.cancel()
        done, _ = await asyncio.wait({running}, timeout=2)
        assert done, "the device task polled on after its cancel"
        running = asyncio.create_task(task.run())
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
