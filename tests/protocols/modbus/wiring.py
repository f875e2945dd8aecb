"""A simulated device and the driver under test, wired over TCP or over RTU on a pty pair."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from device_profiles.schema import ModbusRtuProfile, ModbusTcpProfile, parse_profile
from protocols.modbus.client import ModbusDriver
from protocols.modbus.simulator import ModbusRtuSimulator, ModbusSimulator, SimulatedDevice
from protocols.serial_link import SerialLink
from tests.conftest import free_port

Transport = Literal["tcp", "rtu"]
TRANSPORTS: tuple[Transport, ...] = ("tcp", "rtu")

# Generous for a loaded 2-core machine: a test that waits the full timeout stays short,
# and a test that expects a reply never sees a spurious one.
TIMEOUT_S = 2.0


def profile_for(
    transport: Transport, tags: list[dict[str, Any]], **connection: Any
) -> ModbusTcpProfile | ModbusRtuProfile:
    """A profile for the device under test; connection keys override the defaults."""
    if transport == "tcp":
        conn = {"host": "127.0.0.1", "port": free_port(), "timeout_s": TIMEOUT_S}
    else:
        # The port is a placeholder until a SerialLink exists; 8N1 because a pseudo-terminal
        # on recent kernels refuses parity (and cannot tell the difference anyway).
        conn = {"port": "/dev/null", "baudrate": 19200, "timeout_s": TIMEOUT_S}
    profile = parse_profile(
        {
            "profile_version": 1,
            "name": "device-under-test",
            "protocol": f"modbus_{transport}",
            "connection": conn | connection,
            "tags": tags,
        }
    )
    assert isinstance(profile, ModbusTcpProfile | ModbusRtuProfile)
    return profile


def on_port(profile: ModbusRtuProfile, port: str) -> ModbusRtuProfile:
    return profile.model_copy(
        update={"connection": profile.connection.model_copy(update={"port": port})}
    )


@asynccontextmanager
async def wired(
    profile: ModbusTcpProfile | ModbusRtuProfile,
    device_profile: ModbusTcpProfile | ModbusRtuProfile | None = None,
) -> AsyncIterator[tuple[SimulatedDevice, ModbusDriver, SerialLink | None]]:
    """The simulated device serving `device_profile` (default: the same profile), and an
    open driver for `profile` talking to it; for RTU also the link between the two."""
    device_profile = device_profile or profile
    if isinstance(profile, ModbusTcpProfile):
        assert isinstance(device_profile, ModbusTcpProfile)
        async with ModbusSimulator(device_profile) as sim:
            driver = ModbusDriver(profile)
            await driver.open()
            try:
                yield sim, driver, None
            finally:
                await driver.close()
        return
    assert isinstance(device_profile, ModbusRtuProfile)
    async with (
        SerialLink() as link,
        ModbusRtuSimulator(device_profile, port=link.device_port) as rtu_sim,
    ):
        driver = ModbusDriver(on_port(profile, link.edge_port))
        await driver.open()
        try:
            yield rtu_sim, driver, link
        finally:
            await driver.close()
