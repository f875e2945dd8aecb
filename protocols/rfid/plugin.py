"""Serial RFID readers plug in here; their tag reads go to a dock door's gate."""

from protocols.registry import ProtocolEntry
from protocols.rfid.client import RfidReaderDriver
from protocols.rfid.profile import RfidReaderProfile
from protocols.rfid.records import TagRead

ENTRIES = (ProtocolEntry("rfid_serial", RfidReaderProfile, RfidReaderDriver, events=TagRead),)
