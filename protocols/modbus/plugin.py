"""Modbus plugs in here: one entry per transport, both read by the one driver."""

from protocols.modbus.client import ModbusDriver
from protocols.modbus.profile import ModbusRtuProfile, ModbusTcpProfile
from protocols.registry import ProtocolEntry

ENTRIES = (
    ProtocolEntry("modbus_tcp", ModbusTcpProfile, ModbusDriver),
    ProtocolEntry("modbus_rtu", ModbusRtuProfile, ModbusDriver),
)
