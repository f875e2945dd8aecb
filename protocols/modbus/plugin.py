"""Modbus plugs in here: one entry per transport, both read by the one driver; the devices
of a site on one RS-485 port are checked together."""

from protocols.modbus.bus import line_conflicts
from protocols.modbus.client import ModbusDriver
from protocols.modbus.profile import ModbusRtuProfile, ModbusTcpProfile
from protocols.registry import ProtocolEntry

ENTRIES = (
    ProtocolEntry("modbus_tcp", ModbusTcpProfile, ModbusDriver),
    ProtocolEntry("modbus_rtu", ModbusRtuProfile, ModbusDriver, site_check=line_conflicts),
)
