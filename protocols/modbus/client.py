"""Modbus TCP/RTU polling driver over pymodbus.

Every pymodbus exception is translated here, once: a lost connection or a timeout is
`DeviceUnavailable` (the supervisor reconnects); a Modbus exception response for one block
turns the tags of that block into bad-quality samples and the other blocks still count.
"""

from __future__ import annotations

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from device_profiles.schema import ModbusRtuProfile, ModbusTcpProfile
from protocols.driver import DeviceUnavailable, Sample
from protocols.modbus.codec import ReadBlock, decode_tag, plan_reads

# Modbus exception codes, as a technician reads them in the device manual.
EXCEPTION_CODES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
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

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        conn = self.profile.connection
        # pymodbus's own reconnect loop is off: the edge's supervisor owns reconnects and
        # records the gap, so there is exactly one place that decides.
        if isinstance(self.profile, ModbusTcpProfile):
            tcp = self.profile.connection
            return AsyncModbusTcpClient(
                tcp.host, port=tcp.port, timeout=tcp.timeout_s, retries=0, reconnect_delay=0
            )
        rtu = self.profile.connection
        return AsyncModbusSerialClient(
            rtu.port,
            framer=FramerType.RTU,
            baudrate=rtu.baudrate,
            parity=rtu.parity,
            stopbits=rtu.stopbits,
            bytesize=rtu.bytesize,
            timeout=conn.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    @property
    def _where(self) -> str:
        conn = self.profile.connection
        if isinstance(self.profile, ModbusTcpProfile):
            return f"{self.profile.connection.host}:{self.profile.connection.port}"
        return f"{conn.port}"  # type: ignore[union-attr]

    async def open(self) -> None:
        await self.close()
        self._client = self._new_client()
        try:
            connected = await self._client.connect()
        except (OSError, ModbusException) as err:
            raise DeviceUnavailable(f"{self.name}: cannot connect to {self._where}: {err}") from err
        if not connected:
            raise DeviceUnavailable(
                f"{self.name}: cannot connect to {self._where}: check the address and that "
                "the device is powered and reachable"
            )

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def read(self) -> list[Sample]:
        if self._client is None or not self._client.connected:
            raise DeviceUnavailable(f"{self.name}: not connected to {self._where}")
        samples: list[Sample] = []
        for block in self.blocks:
            samples.extend(await self._read_block(self._client, block))
        return samples

    async def _read_block(
        self, client: AsyncModbusTcpClient | AsyncModbusSerialClient, block: ReadBlock
    ) -> list[Sample]:
        read = (
            client.read_holding_registers
            if block.table == "holding"
            else client.read_input_registers
        )
        unit = self.profile.connection.unit_id
        try:
            response = await read(block.start, count=block.count, device_id=unit)
        except (ModbusException, OSError, TimeoutError) as err:
            raise DeviceUnavailable(
                f"{self.name}: reading {block.table} registers {block.start}..."
                f"{block.start + block.count - 1} from {self._where} failed: {err}"
            ) from err
        if response.isError():
            code = getattr(response, "exception_code", 0)
            detail = (
                f"Modbus exception {code} ({EXCEPTION_CODES.get(code, 'unknown')}) reading "
                f"{block.table} registers {block.start}..{block.start + block.count - 1}"
            )
            return [Sample(t.name, None, t.unit, "bad", detail=detail) for t in block.tags]
        registers = list(response.registers)
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
