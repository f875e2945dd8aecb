"""Modbus TCP/RTU polling driver over pymodbus.

Every pymodbus exception is translated here, once: a lost connection or a timeout is
`DeviceUnavailable` (the supervisor reconnects); a serial port that refuses the profile's
settings is `DeviceMisconfigured`. A Modbus exception response for one block, or an RTU
reply garbled on the line, turns the tags of that block into bad-quality samples and the
other blocks still count.
"""

from __future__ import annotations

import contextlib
import math
import termios
from typing import Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from protocols.driver import DeviceMisconfigured, DeviceUnavailable, ProbeReading, Sample
from protocols.modbus import bus
from protocols.modbus.codec import ReadBlock, decode_raw, decode_tag, plan_reads
from protocols.modbus.profile import (
    ModbusRtuConnection,
    ModbusRtuProfile,
    ModbusTag,
    ModbusTcpConnection,
    ModbusTcpProfile,
)

# Modbus exception codes, as a technician reads them in the device manual.
EXCEPTION_CODES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusDriver:
    """Reads the tags of one Modbus profile in as few requests as the protocol allows."""

    def __init__(self, profile: ModbusTcpProfile | ModbusRtuProfile) -> None:
        self.name = profile.name
        self.profile = profile
        self.blocks: list[ReadBlock] = plan_reads(profile.tags)
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        # RTU replies that came back but failed the CRC check or framing, since creation:
        # a rising count is a noisy line (wiring, termination, shield), not a dead device.
        self.garbled_replies = 0
        self._bus: bus.SerialBus | None = None  # RTU: the line shared with other devices

    def bad_input(self) -> dict[str, int]:
        return {"garbled_replies": self.garbled_replies}

    def _new_client(self) -> AsyncModbusTcpClient:
        """A TCP device's own client (RTU devices share their line's: bus.SerialBus).
        pymodbus's own reconnect loop is off: the edge's supervisor owns reconnects and
        records the gap, so there is exactly one place that decides."""
        tcp = self.profile.connection
        assert isinstance(tcp, ModbusTcpConnection)
        return AsyncModbusTcpClient(
            tcp.host, port=tcp.port, timeout=tcp.timeout_s, retries=0, reconnect_delay=0
        )

    @property
    def _line_settings(self) -> str:
        """Serial settings as a manual writes them: 19200 8E1."""
        c = self.profile.connection
        if not isinstance(c, ModbusRtuConnection):
            return "TCP"
        return f"{c.baudrate} {c.bytesize}{c.parity}{c.stopbits}"

    @property
    def _where(self) -> str:
        conn = self.profile.connection
        if isinstance(self.profile, ModbusTcpProfile):
            return f"{self.profile.connection.host}:{self.profile.connection.port}"
        return f"{conn.port}"  # type: ignore[union-attr]

    async def open(self) -> None:
        await self.close()
        try:
            if isinstance(self.profile, ModbusRtuProfile):
                # Devices on one RS-485 port share its link (protocols/modbus/bus.py).
                self._bus = bus.attach(self.name, self.profile.connection)
                connected = await self._bus.connect()
                self._client = self._bus.client
            else:
                self._client = self._new_client()
                connected = await self._client.connect()
        except (OSError, ModbusException) as err:
            raise DeviceUnavailable(f"{self.name}: cannot connect to {self._where}: {err}") from err
        except termios.error as err:
            # pyserial lets the kernel's refusal of a setting through as termios.error.
            raise DeviceMisconfigured(
                f"{self.name}: serial port {self._where} refuses {self._line_settings} "
                f"({err}): check connection.baudrate/parity/bytesize/stopbits against what "
                "the adapter supports"
            ) from err
        if not connected:
            if isinstance(self.profile, ModbusTcpProfile):
                hint = "check the address and that the device is powered and reachable"
            else:
                hint = (
                    "check that the path exists (ls /dev/serial/by-id/), the adapter is "
                    "plugged in and no other program (or other profile on this edge) has the "
                    "port open"
                )
            raise DeviceUnavailable(f"{self.name}: cannot connect to {self._where}: {hint}")

    async def close(self) -> None:
        if self._bus is not None:
            self._bus.release(self.name)
            self._bus = None
        elif self._client is not None:
            self._client.close()
        self._client = None

    async def read(self) -> list[Sample]:
        if self._client is None or not self._client.connected:
            raise DeviceUnavailable(f"{self.name}: not connected to {self._where}")
        samples: list[Sample] = []
        for block in self.blocks:
            samples.extend(await self._read_block(self._client, block))
        return samples

    async def probe(self) -> list[ProbeReading]:
        """Every tag once, with the registers it was decoded from and what they would read
        as under the other byte and word orders."""
        if self._client is None or not self._client.connected:
            raise DeviceUnavailable(f"{self.name}: not connected to {self._where}")
        readings = []
        for block in self.blocks:
            registers, samples = await self._read_registers(self._client, block)
            for tag, sample in zip(block.tags, samples, strict=True):
                where = f"{tag.table} {tag.address}" + (
                    f"..{tag.address + tag.register_count - 1}" if tag.register_count > 1 else ""
                )
                if registers is None:
                    readings.append(ProbeReading(sample, where, sample.detail or "no answer"))
                    continue
                regs = block.slice_for(tag, registers)
                raw = " ".join(f"0x{r:04X}" for r in regs)
                readings.append(ProbeReading(sample, where, raw, _other_orders(tag, regs)))
        return readings

    async def _read_registers(
        self, client: AsyncModbusTcpClient | AsyncModbusSerialClient, block: ReadBlock
    ) -> tuple[list[int] | None, list[Sample]]:
        """The block's registers (None after an exception reply) and its samples."""
        captured: list[list[int]] = []
        samples = await self._read_block(client, block, captured)
        return (captured[0] if captured else None), samples

    async def _read_block(
        self,
        client: AsyncModbusTcpClient | AsyncModbusSerialClient,
        block: ReadBlock,
        captured: list[list[int]] | None = None,
    ) -> list[Sample]:
        read = (
            client.read_holding_registers
            if block.table == "holding"
            else client.read_input_registers
        )
        unit = self.profile.connection.unit_id
        registers_read = f"{block.table} registers {block.start}..{block.start + block.count - 1}"
        line = self._bus.lock if self._bus is not None else contextlib.nullcontext()
        try:
            async with line:  # one request and its reply at a time on a shared line
                try:
                    response = await read(block.start, count=block.count, device_id=unit)
                finally:
                    heard = self._bus.bytes_heard if self._bus is not None else 0
        except (ModbusException, OSError, TimeoutError) as err:
            no_reply = isinstance(err, ModbusIOException) and not isinstance(
                err, ConnectionException
            )
            if no_reply and isinstance(self.profile, ModbusRtuProfile):
                return self._rtu_no_valid_reply(block, registers_read, err, heard)
            raise DeviceUnavailable(
                f"{self.name}: reading {registers_read} from {self._where} failed: {err}"
            ) from err
        if response.isError():
            code = getattr(response, "exception_code", 0)
            detail = (
                f"Modbus exception {code} ({EXCEPTION_CODES.get(code, 'unknown')}) reading "
                f"{registers_read}"
            )
            return [Sample(t.name, None, t.unit, "bad", detail=detail) for t in block.tags]
        registers = list(response.registers)
        if captured is not None:
            captured.append(registers)
        samples = []
        for tag in block.tags:
            value = decode_tag(tag, block.slice_for(tag, registers))
            if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
                samples.append(
                    Sample(tag.name, None, tag.unit, "bad", detail=f"device sent {value}")
                )
            else:
                samples.append(Sample(tag.name, value, tag.unit))
        return samples

    def _rtu_no_valid_reply(
        self, block: ReadBlock, registers_read: str, err: Exception, heard: int
    ) -> list[Sample]:
        conn = self.profile.connection
        if heard:
            # The device is there and answered: this poll's values are lost, the next
            # poll will most likely get through, so this is a bad reading, not an outage.
            self.garbled_replies += 1
            detail = (
                f"garbled reply ({heard} bytes failed the RTU CRC check) reading "
                f"{registers_read}: check the RS-485 wiring, termination and shield"
            )
            return [Sample(t.name, None, t.unit, "bad", detail=detail) for t in block.tags]
        raise DeviceUnavailable(
            f"{self.name}: no reply from unit {conn.unit_id} on {self._where} within "
            f"{conn.timeout_s:g} s reading {registers_read}: check connection.unit_id, the "
            f"A/B wiring, that the device is set to {self._line_settings} and is powered"
        ) from err


def _other_orders(tag: ModbusTag, registers: list[int]) -> tuple[tuple[str, float], ...]:
    """The registers decoded under each other byte/word order (multi-register types: word
    order too), scale and offset applied: a swapped order shows as a sane value here."""
    out = []
    words: tuple[Literal["big", "little"], ...] = (
        ("big", "little") if tag.register_count > 1 else (tag.word_order,)
    )
    for byte_order in ("big", "little"):
        for word_order in words:
            if (byte_order, word_order) == (tag.byte_order, tag.word_order):
                continue
            value = decode_raw(registers, tag.data_type, byte_order, word_order)
            if math.isfinite(value):
                label = f"byte_order {byte_order}, word_order {word_order}"
                out.append((label, value * tag.scale + tag.offset))
    return tuple(out)
