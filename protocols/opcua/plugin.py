"""OPC UA plugs in here."""

from protocols.opcua.client import OpcUaDriver
from protocols.opcua.profile import OpcUaProfile
from protocols.registry import ProtocolEntry

ENTRIES = (ProtocolEntry("opcua", OpcUaProfile, OpcUaDriver),)
