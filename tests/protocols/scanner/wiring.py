"""Profiles for the scanner under test and a collector for what the driver delivers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from device_profiles.schema import SerialScannerProfile, WedgeScannerProfile, parse_profile
from protocols.scanner.client import Scan
from protocols.scanner.framing import Terminator

# Generous for a loaded 2-core machine: a wait that succeeds takes milliseconds, and one
# that fails says what it got.
WAIT_S = 15.0

RULES: list[dict[str, Any]] = [
    {"meaning": "operator", "pattern": "^OP-"},
    {"meaning": "batch_start", "pattern": "^WO-"},
    {"meaning": "consume", "ais": ["01", "10"]},
    {"meaning": "receive", "ais": ["00"]},
]


def serial_profile(
    port: str, terminator: Terminator = "\r", **connection: Any
) -> SerialScannerProfile:
    profile = parse_profile(
        {
            "profile_version": 1,
            "name": "scanner-under-test",
            "protocol": "scanner_serial",
            "connection": {"port": port} | connection,
            "terminator": terminator,
            "rules": RULES,
        }
    )
    assert isinstance(profile, SerialScannerProfile)
    return profile


def wedge_profile(path: str, terminator: Terminator = "\n") -> WedgeScannerProfile:
    profile = parse_profile(
        {
            "profile_version": 1,
            "name": "wedge-under-test",
            "protocol": "scanner_wedge",
            "connection": {"path": path},
            "terminator": terminator,
            "rules": RULES,
        }
    )
    assert isinstance(profile, WedgeScannerProfile)
    return profile


class Collector:
    """The `deliver` callback: keeps every batch of scans."""

    def __init__(self) -> None:
        self.batches: list[list[Scan]] = []

    def __call__(self, scans: list[Scan]) -> None:
        self.batches.append(scans)

    @property
    def scans(self) -> list[Scan]:
        return [s for batch in self.batches for s in batch]

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.scans]

    async def wait_for(self, count: int) -> list[Scan]:
        deadline = time.monotonic() + WAIT_S
        while len(self.scans) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} scans within {WAIT_S} s, got {self.texts}")
            await asyncio.sleep(0.01)
        return self.scans


async def settle() -> None:
    """Time for anything still in flight to arrive, so a test can assert nothing more did."""
    await asyncio.sleep(0.3)
