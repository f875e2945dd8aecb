"""A barcode scanner simulator for tests and the demo (not used by the edge runtime).

It sits on the device end of a serial line (in tests `SerialLink.device_port`) and sends
what a scanner sends: each scan's text, with the symbology identifier in front if asked,
and the terminator behind. It can send a burst of scans in one write (a scanner emptying
its batch memory), and line noise on demand.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Self

import serial

from protocols.scanner.framing import Terminator

# Bytes a disturbed RS-232 line delivers: a break (NUL), flow-control and bell codes, a
# C1 control and a glitch that reads as 0xFF.
NOISE = b"\x00\x13\x11\x07\x9b\xff"


class ScannerSimulator:
    """A scanner on `port`, ending each scan with `terminator`.

    `symbology` is put in front of every scan unless a call names its own: as a scanner
    with AIM identifiers switched on does (it would send the identifier of the barcode
    read, so tests pass the one that fits: "]C1" for GS1-128, "]C0" for Code 128).
    """

    def __init__(
        self, port: str, terminator: Terminator = "\r", symbology: str | None = None
    ) -> None:
        self.port = port
        self.terminator = terminator
        self.symbology = symbology
        self.sent = 0  # scans sent
        self.noise_sent = 0  # noise bursts sent
        self._serial: serial.Serial | None = None

    def start(self) -> None:
        try:
            # 8N1: a pseudo-terminal refuses parity on recent kernels, and moves bytes anyway.
            self._serial = serial.Serial(self.port, 115200, timeout=0)
        except serial.SerialException as err:
            raise RuntimeError(f"scanner simulator cannot open {self.port}: {err}") from err

    def stop(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def frame(self, text: str, symbology: str | None = None) -> bytes:
        """The bytes a scanner sends for one scan of `text`."""
        prefix = symbology if symbology is not None else (self.symbology or "")
        return (prefix + text + self.terminator).encode("latin-1")

    async def scan(self, text: str, symbology: str | None = None) -> None:
        await self.send(self.frame(text, symbology))
        self.sent += 1

    async def burst(self, texts: Iterable[str], symbology: str | None = None) -> None:
        """Several scans in one write, as a scanner uploading its stored scans sends them."""
        frames = [self.frame(t, symbology) for t in texts]
        await self.send(b"".join(frames))
        self.sent += len(frames)

    async def noise(self, data: bytes = NOISE, *, terminated: bool = True) -> None:
        """Line noise. Terminated, it reaches the edge as a garbage line of its own; left
        unterminated, it spoils the scan that follows it, as real noise does."""
        await self.send(data + (self.terminator.encode() if terminated else b""))
        self.noise_sent += 1

    async def send(self, data: bytes) -> None:
        """Put raw bytes on the line, waiting while the line's buffer is full."""
        if self._serial is None:
            raise RuntimeError(f"scanner simulator on {self.port} is not started: start() it")
        fd = self._serial.fileno()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                # The link's relay runs in this same event loop: yield so it can drain.
                await asyncio.sleep(0.001)
