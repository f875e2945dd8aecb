"""Barcode scanners plug in here, serial or keyboard wedge; their scans go to the station's
scan rules."""

from protocols.registry import ProtocolEntry
from protocols.scanner.client import Scan, ScannerDriver
from protocols.scanner.profile import SerialScannerProfile, WedgeScannerProfile

ENTRIES = (
    ProtocolEntry("scanner_serial", SerialScannerProfile, ScannerDriver, events=Scan),
    ProtocolEntry("scanner_wedge", WedgeScannerProfile, ScannerDriver, events=Scan),
)
