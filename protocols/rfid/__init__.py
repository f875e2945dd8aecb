"""Serial UHF RFID readers at dock-door gates: Mercury and ASCII framing codecs (pure),
EPC decoding by the Tag Data Standard, the gate that collapses reads into observations,
the serial driver, and a reader simulator."""

from protocols.rfid.records import DecoderCounters, TagRead, TagRecord

__all__ = ["DecoderCounters", "TagRead", "TagRecord"]
