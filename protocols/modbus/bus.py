"""Several Modbus RTU devices on one RS-485 port: one serial link, one request at a time.

An RS-485 line is a shared medium: the master asks one unit id, waits for its answer (or its
timeout), then asks the next. Two serial clients on one port would each read the other's
replies, so every driver whose profile names the same port shares one `SerialBus`: one
pymodbus client, opened by the first device and closed with the last, and a lock held for
each request and its reply. The port is a resource of the process, so the buses are kept
per port path in this module.

Every device on a line must use the line's serial settings (baud rate, parity, data and stop
bits): a profile that differs is `DeviceMisconfigured`, naming the device that opened the
line. The reply timeout is the first device's (pymodbus sets it per client).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from protocols.driver import DeviceMisconfigured
from protocols.modbus.profile import ModbusRtuConnection, ModbusRtuProfile


@dataclass(frozen=True)
class LineSettings:
    port: str
    baudrate: int
    parity: str
    bytesize: int
    stopbits: int

    @classmethod
    def of(cls, c: ModbusRtuConnection) -> LineSettings:
        return cls(c.port, c.baudrate, c.parity, c.bytesize, c.stopbits)

    def __str__(self) -> str:
        """As a manual writes them: 19200 8E1."""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


@dataclass(eq=False)
class SerialBus:
    settings: LineSettings
    timeout_s: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    devices: set[str] = field(default_factory=set)  # the drivers attached, by device name
    client: AsyncModbusSerialClient | None = None
    # Bytes received since the last request went out: whether a garbled reply came back
    # (pymodbus drops a reply that fails its CRC check and then times out as if silent).
    bytes_heard: int = 0

    def _watch_line(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.bytes_heard = 0
        else:
            self.bytes_heard = max(self.bytes_heard, len(data))
        return data

    def new_client(self) -> AsyncModbusSerialClient:
        s = self.settings
        # pymodbus's own reconnect loop is off: the edge's supervisor owns reconnects.
        return AsyncModbusSerialClient(
            s.port,
            framer=FramerType.RTU,
            baudrate=s.baudrate,
            parity=s.parity,
            stopbits=s.stopbits,
            bytesize=s.bytesize,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._watch_line,
        )

    async def connect(self) -> bool:
        """Open the port unless it is open (a lost port is opened anew)."""
        async with self.lock:
            if self.client is not None and self.client.connected:
                return True
            if self.client is not None:
                self.client.close()
            self.client = self.new_client()
            connected = await self.client.connect()
            return bool(connected)

    def release(self, device: str) -> None:
        """`device` no longer uses the line; the last one closes the port."""
        self.devices.discard(device)
        if self.devices:
            return
        if self.client is not None:
            self.client.close()
            self.client = None
        if _BUSES.get(self.settings.port) is self:
            del _BUSES[self.settings.port]


_BUSES: dict[str, SerialBus] = {}


def attach(device: str, connection: ModbusRtuConnection) -> SerialBus:
    """The bus of the connection's port, with `device` attached (opened by its first
    device); DeviceMisconfigured if the line already runs other serial settings."""
    settings = LineSettings.of(connection)
    bus = _BUSES.get(connection.port)
    if bus is None:
        bus = _BUSES[connection.port] = SerialBus(settings, connection.timeout_s)
    elif bus.settings != settings and bus.devices - {device}:
        others = ", ".join(sorted(bus.devices - {device}))
        raise DeviceMisconfigured(
            f"{device}: port {connection.port} runs at {bus.settings} for {others}; this "
            f"profile asks {settings}: every device on one RS-485 line uses the line's "
            "settings (set the device and connection.baudrate/parity/bytesize/stopbits alike)"
        )
    elif bus.settings != settings:
        # Its only device, reopened with new settings: the port opens anew with them.
        bus.settings = settings
        if bus.client is not None:
            bus.client.close()
            bus.client = None
    bus.devices.add(device)
    return bus


def line_conflicts(devices: Mapping[str, ModbusRtuProfile]) -> list[str]:
    """Devices (by name) that share a port with another device's other serial settings or
    unit id, as `device: what and the fix` lines: a site is checked before any port opens
    (the modbus_rtu entry's site check)."""
    problems = []
    first: dict[str, tuple[str, LineSettings]] = {}
    units: dict[tuple[str, int], str] = {}
    for name, profile in devices.items():
        c = profile.connection
        settings = LineSettings.of(c)
        opener = first.setdefault(c.port, (name, settings))
        if opener[1] != settings:
            problems.append(
                f"{name}: port {c.port} runs at {opener[1]} for {opener[0]}, this device asks "
                f"{settings}: devices on one RS-485 line use the same serial settings"
            )
        other = units.setdefault((c.port, c.unit_id), name)
        if other != name:
            problems.append(
                f"{name}: unit id {c.unit_id} on port {c.port} is also {other}'s: give each "
                "device on a line its own unit id"
            )
    return problems
