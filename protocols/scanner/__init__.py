"""Barcode scanners: GS1 parsing and framing (pure), scan rules, the driver, a simulator."""

from protocols.scanner.client import Scan, ScannerDriver
from protocols.scanner.gs1 import Gs1Scan, parse_scan
from protocols.scanner.rules import meaning_of

__all__ = ["Gs1Scan", "Scan", "ScannerDriver", "meaning_of", "parse_scan"]
