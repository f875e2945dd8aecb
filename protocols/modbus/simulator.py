"""A Modbus TCP device simulator for tests and the demo (not used by the edge runtime).

It serves the register map of a Modbus profile from a real pymodbus server, so the edge
reads it over TCP exactly as it would read a controller on the line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from device_profiles.schema import ModbusTag, ModbusTcpProfile
from protocols.modbus.codec import encode_tag

_FUNCTION_CODE = {"holding": 3, "input": 4}


class ModbusSimulator:
    def __init__(self, profile: ModbusTcpProfile, host: str = "127.0.0.1", port: int = 0) -> None:
        self.profile = profile
        self.host = host
        self.port = port or profile.connection.port
        self._tags: dict[str, ModbusTag] = {t.name: t for t in profile.tags}
        self.size = max(t.address + t.register_count for t in profile.tags)
        # One register image per table; the device's access hook serves from them, so a
        # test can change a value, or make the device answer with an exception, at any time.
        self.registers: dict[int, list[int]] = {3: [0] * self.size, 4: [0] * self.size}
        self.fault: ExcCodes | None = None
        self._device = SimDevice(
            id=profile.connection.unit_id,
            simdata=[SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)],
            action=self._serve,
        )
        self._server: ModbusTcpServer | None = None
        self._task: asyncio.Task[None] | None = None

    def set(self, tag_name: str, value: float) -> None:
        tag = self._tags[tag_name]
        self.set_registers(tag.table, tag.address, encode_tag(tag, value))

    def set_registers(self, table: str, address: int, registers: list[int]) -> None:
        self.registers[_FUNCTION_CODE[table]][address : address + len(registers)] = registers

    async def _serve(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if self.fault is not None:
            return self.fault
        image = self.registers.get(function_code)
        if image is None:
            return ExcCodes.ILLEGAL_FUNCTION
        for i in range(count):
            current_registers[address - start_address + i] = image[address + i]
        return None

    async def start(self) -> None:
        self._server = ModbusTcpServer(self._device, address=(self.host, self.port))
        self._task = asyncio.create_task(self._server.serve_forever())
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"Modbus simulator did not listen on {self.host}:{self.port}")

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_reactor_process(sim: ModbusSimulator, period_s: float = 0.5) -> None:
    """Drive the temperature/pressure controller's tags like a heating reactor charge."""
    t0 = time.monotonic()
    sim.set("setpoint", 75.0)
    while True:
        t = time.monotonic() - t0
        sim.set("temperature", round(75.0 + 4.0 * math.sin(t / 7.0) + 0.3 * math.sin(t * 1.7), 3))
        sim.set("pressure", round(2.2 + 0.25 * math.sin(t / 5.0), 4))
        sim.set("agitator_speed", 120.0 + 10.0 * math.sin(t / 3.0))
        await asyncio.sleep(period_s)
