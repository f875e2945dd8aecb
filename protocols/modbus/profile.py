"""The Modbus TCP and Modbus RTU profile models: the connection, the registers and how to
decode them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from protocols.profile import Name, ProfileBase, SpecLimits, Strict

# Registers each data type occupies: the one table that sizes every Modbus read.
REGISTER_COUNT: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}


class ModbusTag(Strict):
    name: Name
    table: Literal["holding", "input"] = "holding"
    address: int = Field(ge=0, le=65535, description="0-based register address")
    data_type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64"]
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(default=None, max_length=32)
    spec: SpecLimits | None = None

    @property
    def register_count(self) -> int:
        return REGISTER_COUNT[self.data_type]

    @model_validator(mode="after")
    def _fits(self) -> ModbusTag:
        last = self.address + self.register_count - 1
        if last > 65535:
            raise ValueError(
                f"a {self.data_type} at register {self.address} ends at {last}, "
                "past the last Modbus address 65535"
            )
        if self.scale == 0:
            raise ValueError("scale 0 turns every value into the offset: use 1 for no scaling")
        return self


class ModbusTcpConnection(Strict):
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=247)
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class ModbusRtuConnection(Strict):
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    unit_id: int = Field(default=1, ge=1, le=247)
    timeout_s: float = Field(default=1.0, gt=0, le=60)


class ModbusTcpProfile(ProfileBase):
    protocol: Literal["modbus_tcp"]
    connection: ModbusTcpConnection
    poll_interval_s: float = Field(default=1.0, ge=0.05, le=3600)
    tags: list[ModbusTag] = Field(min_length=1)


class ModbusRtuProfile(ProfileBase):
    protocol: Literal["modbus_rtu"]
    connection: ModbusRtuConnection
    poll_interval_s: float = Field(default=1.0, ge=0.05, le=3600)
    tags: list[ModbusTag] = Field(min_length=1)


ModbusProfile = ModbusTcpProfile | ModbusRtuProfile
