"""Which driver reads which protocol: adding a protocol is one line here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from device_profiles.schema import DeviceProfile
from protocols.driver import PollingDriver, StreamingDriver
from protocols.modbus.client import ModbusDriver
from protocols.opcua.client import OpcUaDriver
from protocols.rfid.client import RfidReaderDriver
from protocols.scanner.client import ScannerDriver

DRIVERS: dict[str, Callable[[Any], Any]] = {
    "modbus_tcp": ModbusDriver,
    "modbus_rtu": ModbusDriver,
    "opcua": OpcUaDriver,
    "rfid_serial": RfidReaderDriver,
    "scanner_serial": ScannerDriver,
    "scanner_wedge": ScannerDriver,
}


def driver_for(profile: DeviceProfile) -> PollingDriver | StreamingDriver:
    return DRIVERS[profile.protocol](profile)
