"""The protocols this build reads: one line per protocol folder, whose `plugin.py` declares
its profile models and drivers. Adding a protocol is its folder and one line here."""

from protocols.modbus import plugin as modbus
from protocols.opcua import plugin as opcua
from protocols.registry import Registry
from protocols.rfid import plugin as rfid
from protocols.scanner import plugin as scanner

REGISTRY = Registry(
    [
        *modbus.ENTRIES,
        *opcua.ENTRIES,
        *rfid.ENTRIES,
        *scanner.ENTRIES,
    ]
)
