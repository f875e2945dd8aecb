"""A Modbus device simulator for tests and the demo (not used by the edge runtime).

It serves the register map of a Modbus profile from a real pymodbus server, over TCP
(`ModbusSimulator`) or over a serial port with RTU framing (`ModbusRtuSimulator`), so the
edge reads it exactly as it would read a device on the line. Both are a `SimulatedDevice`:
one register image, one way to make the device answer with an exception or fall silent,
whichever wire it is on.
"""

from __future__ import annotations

import asyncio
import math
import termios
import time
from collections.abc import Callable
from typing import Self

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusBaseServer, ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus.codec import encode_tag
from protocols.modbus.profile import (
    ModbusRtuConnection,
    ModbusRtuProfile,
    ModbusTag,
    ModbusTcpProfile,
)

_FUNCTION_CODE = {"holding": 3, "input": 4}


class ServedWire:
    """A pymodbus server answering on one wire (a TCP port or a serial line), started and
    stopped as an async context."""

    _server: ModbusBaseServer | None = None

    @property
    def where(self) -> str:
        raise NotImplementedError

    def _new_server(self) -> ModbusBaseServer:
        raise NotImplementedError

    async def start(self) -> None:
        server = self._new_server()
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:
            raise RuntimeError(
                f"Modbus simulator did not listen on {self.where}: is the port in use?"
            ) from err
        except termios.error as err:
            raise RuntimeError(
                f"Modbus simulator cannot open {self.where}: the port refuses these serial "
                f"settings ({err}); pseudo-terminals on recent kernels take only 8N1/8N2"
            ) from err
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _rtu_server(
    devices: list[SimDevice],
    connection: ModbusRtuConnection,
    port: str,
    on_wire: Callable[[bool, bytes], bytes],
) -> ModbusSerialServer:
    c = connection
    return ModbusSerialServer(
        devices,
        framer=FramerType.RTU,
        port=port,
        baudrate=c.baudrate,
        parity=c.parity,
        stopbits=c.stopbits,
        bytesize=c.bytesize,
        trace_packet=on_wire,
    )


def _serial_where(port: str, c: ModbusRtuConnection) -> str:
    return f"{port} ({c.baudrate} {c.bytesize}{c.parity}{c.stopbits})"


class SimulatedDevice(ServedWire):
    """The register image of one Modbus device, and the server that answers from it.

    `registers` holds one image per table, keyed by the function code that reads it. The
    server's access hook serves from them, so a test can change a value (`set`,
    `set_registers`), make the device answer with an exception (`fault`), or make it stop
    answering (`silent`) at any time, also while the edge is polling.
    """

    def __init__(self, profile: ModbusTcpProfile | ModbusRtuProfile) -> None:
        self.profile = profile
        self.unit_id = profile.connection.unit_id
        self._tags: dict[str, ModbusTag] = {t.name: t for t in profile.tags}
        self.size = max(t.address + t.register_count for t in profile.tags)
        self.registers: dict[int, list[int]] = {3: [0] * self.size, 4: [0] * self.size}
        self.fault: ExcCodes | None = None
        # Requests still arrive and are decoded; only the replies are held back, as with a
        # device whose communication board hangs or whose transmit line is broken.
        self.silent = False
        # Called with (function code, address, count) before each read is answered: lets a
        # test make every answer distinct (a counter), so what was served can be compared
        # with what was stored, row for row.
        self.on_read: Callable[[int, int, int], None] | None = None
        self._device = SimDevice(
            id=self.unit_id,
            simdata=[SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)],
            action=self._serve,
        )

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
        if self.on_read is not None and set_values is None:
            self.on_read(function_code, address, count)
        image = self.registers.get(function_code)
        if image is None:
            return ExcCodes.ILLEGAL_FUNCTION
        for i in range(count):
            current_registers[address - start_address + i] = image[address + i]
        return None

    def _on_wire(self, sending: bool, packet: bytes) -> bytes:
        """pymodbus's packet hook: what it returns is what goes on the wire."""
        if sending and self.silent:
            return b""
        return packet


class ModbusSimulator(SimulatedDevice):
    """A Modbus TCP device listening on host:port (the profile's port when port is 0)."""

    def __init__(self, profile: ModbusTcpProfile, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(profile)
        self.host = host
        self.port = port or profile.connection.port

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _new_server(self) -> ModbusBaseServer:
        return ModbusTcpServer(
            self._device, address=(self.host, self.port), trace_packet=self._on_wire
        )


class ModbusRtuSimulator(SimulatedDevice):
    """A Modbus RTU device on a serial port, with the profile's serial settings.

    `port` is the device's end of the line: in tests, `SerialLink.device_port`; by default
    the profile's own port (a USB adapter wired to the edge's adapter by a null-modem cable).
    """

    def __init__(self, profile: ModbusRtuProfile, port: str | None = None) -> None:
        super().__init__(profile)
        self.connection = profile.connection
        self.port = port or profile.connection.port

    @property
    def where(self) -> str:
        return _serial_where(self.port, self.connection)

    def _new_server(self) -> ModbusBaseServer:
        return _rtu_server([self._device], self.connection, self.port, self._on_wire)

    def _on_wire(self, sending: bool, packet: bytes) -> bytes:
        # Every device on an RS-485 line hears every frame and answers only its own address;
        # pymodbus would answer a frame for another address with exception 4 instead.
        if sending and packet[:1] != bytes([self.unit_id]):
            return b""
        return super()._on_wire(sending, packet)


async def run_reactor_process(sim: SimulatedDevice, period_s: float = 0.5) -> None:
    """Drive the temperature/pressure controller's tags like a heating reactor charge."""
    t0 = time.monotonic()
    sim.set("setpoint", 75.0)
    while True:
        t = time.monotonic() - t0
        sim.set("temperature", round(75.0 + 4.0 * math.sin(t / 7.0) + 0.3 * math.sin(t * 1.7), 3))
        sim.set("pressure", round(2.2 + 0.25 * math.sin(t / 5.0), 4))
        sim.set("agitator_speed", 120.0 + 10.0 * math.sin(t / 3.0))
        await asyncio.sleep(period_s)


class ModbusRtuLine(ServedWire):
    """Several Modbus RTU devices on one RS-485 line (one serial port): each answers only
    its own unit id, as on a real line. `devices[unit_id]` is the device's register image,
    set like a single simulator's (`set`, `fault`, `silent`)."""

    def __init__(self, profiles: list[ModbusRtuProfile], port: str) -> None:
        if not profiles:
            raise ValueError("a line needs at least one device")
        self.devices = {p.connection.unit_id: ModbusRtuSimulator(p, port) for p in profiles}
        if len(self.devices) != len(profiles):
            raise ValueError("two devices on one line share a unit id")
        self.connection = profiles[0].connection
        self.port = port

    @property
    def where(self) -> str:
        return _serial_where(self.port, self.connection)

    def _new_server(self) -> ModbusBaseServer:
        return _rtu_server(
            [d._device for d in self.devices.values()], self.connection, self.port, self._on_wire
        )

    def _on_wire(self, sending: bool, packet: bytes) -> bytes:
        if not sending:
            return packet
        device = self.devices.get(packet[0]) if packet else None
        if device is None or device.silent:
            return b""  # a unit id nobody on the line has: no answer
        return packet
