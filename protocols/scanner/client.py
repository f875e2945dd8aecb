"""The scanner driver: scans from a serial port or keyboard-wedge style text input.

A `StreamingDriver`: `stream(deliver)` hands over each read's scans, parsed and given their
meaning at this station, and returns only by raising `DeviceUnavailable`.

Where scans come from, by profile:

- `scanner_serial`: an RS-232 scanner or a USB scanner in COM-port mode, through pyserial,
  read without blocking as the event loop reports the port readable.
- `scanner_wedge`: text lines on `connection.path`:
  - a FIFO is followed forever: writers may come and go (the driver holds it open for
    writing too, so the last writer closing is no end of input);
  - a regular file is read from its start, then followed like `tail -F`: lines appended
    later are read within `file_poll_s`; reopening the same driver resumes where it
    stopped; a file truncated or replaced is read again from its start; a file removed is
    `DeviceUnavailable`. A last line without terminator waits for its terminator;
  - `-`, standard input, is read until it ends; then the unterminated rest counts as a
    scan and `stream` raises `DeviceUnavailable` (nothing more will come).

Every OS and pyserial error is translated here, once: a port that is gone, busy or not
there (an unplugged adapter) is `DeviceUnavailable`; settings the port refuses, a missing
wedge path and missing permissions are `DeviceMisconfigured`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import sys
import termios
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import serial

from protocols.driver import DeviceMisconfigured, DeviceUnavailable
from protocols.scanner.framing import MAX_SCAN_LENGTH, FramedScan, ScanFramer
from protocols.scanner.gs1 import Gs1Scan, parse_scan
from protocols.scanner.profile import ScanMeaning, SerialScannerProfile, WedgeScannerProfile
from protocols.scanner.rules import meaning_of

_READ_SIZE = 65536
# Opening a port fails with these while it will work later: unplugged, not yet
# enumerated, held by another program.
_COME_BACK = {errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EBUSY, errno.EAGAIN, errno.EIO}


@dataclass(frozen=True, slots=True)
class Scan:
    """One scan as the edge received it."""

    text: str  # as scanned: terminator and symbology identifier removed
    symbology: str | None  # the AIM symbology identifier (]C1, ]d2, ...), if the scanner sends it
    gs1: Gs1Scan  # the scan read as GS1 data (kind "plain" when it is not)
    meaning: ScanMeaning | None  # from the profile's first matching rule; None: no rule matched
    time: datetime  # when the edge received it, UTC


Deliver = Callable[[list[Scan]], None]


class ScannerDriver:
    """Reads the scans of one scanner profile."""

    def __init__(
        self,
        profile: SerialScannerProfile | WedgeScannerProfile,
        *,
        max_length: int = MAX_SCAN_LENGTH,
        file_poll_s: float = 0.2,
    ) -> None:
        self.name = profile.name
        self.profile = profile
        self.max_length = max_length
        self.file_poll_s = file_poll_s
        self.scans = 0  # scans delivered since creation
        self._garbage_before = 0  # garbage lines counted by framers of earlier opens
        self._framer = ScanFramer(profile.terminator, max_length)
        self._serial: serial.Serial | None = None
        self._fd: int | None = None
        self._owns_fd = False
        self._regular_file = False  # read by polling: epoll cannot watch regular files
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the file read
        self._offset = 0  # how far the regular file was read: resumed on reopen
        self._stopped: asyncio.Future[None] | None = None

    @property
    def garbage(self) -> int:
        """Lines dropped since creation: noise, or longer than `max_length`. A steady rise
        is a noisy line or a terminator that does not match the scanner's suffix."""
        return self._garbage_before + self._framer.garbage

    def bad_input(self) -> dict[str, int]:
        return {"garbage": self.garbage}

    @property
    def where(self) -> str:
        if isinstance(self.profile, SerialScannerProfile):
            c = self.profile.connection
            return f"{c.port} ({c.baudrate} {c.bytesize}{c.parity}{c.stopbits})"
        path = self.profile.connection.path
        return "standard input" if path == "-" else path

    async def open(self) -> None:
        await self.close()
        self._garbage_before += self._framer.garbage
        # A scan half received before a reconnect is not finished by what follows it.
        self._framer = ScanFramer(self.profile.terminator, self.max_length)
        if isinstance(self.profile, SerialScannerProfile):
            self._open_serial(self.profile)
        else:
            self._open_wedge(self.profile)

    def _open_serial(self, profile: SerialScannerProfile) -> None:
        c = profile.connection
        port = serial.Serial()
        port.port = c.port
        port.baudrate = c.baudrate
        port.parity = c.parity
        port.stopbits = c.stopbits
        port.bytesize = c.bytesize
        port.timeout = 0
        port.exclusive = True  # a second program on the port would steal half the scans
        try:
            port.open()
        except serial.SerialException as err:
            code = err.errno
            if code in (errno.EACCES, errno.EPERM):
                raise DeviceMisconfigured(
                    f"{self.name}: no permission to open {c.port}: add the edge's user to "
                    "the dialout group (then log in again)"
                ) from err
            if code is None and "Could not configure port" in str(err):
                raise DeviceMisconfigured(
                    f"{self.name}: {c.port} is not a serial port ({err}): point "
                    "connection.port at the scanner's port (ls /dev/serial/by-id/)"
                ) from err
            if code in _COME_BACK or code is None:
                raise DeviceUnavailable(
                    f"{self.name}: cannot open {c.port} ({err}): check that the path exists "
                    "(ls /dev/serial/by-id/), the scanner is plugged in and no other program "
                    "(or other profile on this edge) has the port open"
                ) from err
            raise DeviceMisconfigured(f"{self.name}: cannot open {c.port}: {err}") from err
        except (termios.error, ValueError) as err:
            # pyserial lets the kernel's refusal of a setting through as termios.error.
            raise DeviceMisconfigured(
                f"{self.name}: serial port {self.where} refuses these settings ({err}): check "
                "connection.baudrate/parity/bytesize/stopbits against the scanner's set-up"
            ) from err
        self._serial = port
        self._fd = port.fileno()

    def _open_wedge(self, profile: WedgeScannerProfile) -> None:
        path = profile.connection.path
        if path == "-":
            self._fd, self._owns_fd = sys.stdin.fileno(), False
            self._regular_file = stat.S_ISREG(os.fstat(self._fd).st_mode)
            return
        try:
            mode = os.stat(path).st_mode
            if stat.S_ISFIFO(mode):
                # Read and write: with a writer of its own the FIFO never reports end of
                # input when the scanner's writer closes, and the open does not wait for one.
                fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
            elif stat.S_ISREG(mode) or stat.S_ISCHR(mode):
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            else:
                raise DeviceMisconfigured(
                    f"{self.name}: connection.path {path} is neither a FIFO nor a file: point "
                    "it at the FIFO the scanner's input service writes, a file, or - for "
                    "standard input"
                )
        except FileNotFoundError as err:
            raise DeviceMisconfigured(
                f"{self.name}: connection.path {path} does not exist: create the FIFO "
                f"(mkfifo {path}) or start the service that does, or fix the path"
            ) from err
        except PermissionError as err:
            raise DeviceMisconfigured(
                f"{self.name}: no permission to read {path}: let the edge's user read it"
            ) from err
        except OSError as err:
            raise DeviceUnavailable(f"{self.name}: cannot open {path}: {err}") from err
        self._fd, self._owns_fd = fd, True
        self._regular_file = stat.S_ISREG(mode)
        if self._regular_file:
            info = os.fstat(fd)
            file_id = (info.st_dev, info.st_ino)
            if file_id != self._file_id or info.st_size < self._offset:
                self._file_id, self._offset = file_id, 0
            os.lseek(fd, self._offset, os.SEEK_SET)

    async def close(self) -> None:
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_exception(DeviceUnavailable(f"{self.name}: closed while streaming"))
        self._stopped = None
        if self._fd is not None and not self._regular_file:
            asyncio.get_running_loop().remove_reader(self._fd)
        if self._serial is not None:
            self._serial.close()
        elif self._fd is not None and self._owns_fd:
            os.close(self._fd)
        self._serial, self._fd, self._owns_fd = None, None, False

    async def stream(self, deliver: Callable[[list[Any]], None]) -> None:
        if self._fd is None:
            raise DeviceUnavailable(f"{self.name}: not open: call open() first")
        if self._regular_file:
            await self._follow_file(self._fd, deliver)
        else:
            await self._watch(self._fd, deliver)

    async def _watch(self, fd: int, deliver: Deliver) -> None:
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()
        self._stopped = stopped

        def readable() -> None:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError as err:
                self._stop(stopped, fd, DeviceUnavailable(self._lost(str(err))))
                return
            try:
                if data:
                    self._hand_over(self._framer.feed(data), deliver)
                    return
                self._hand_over(self._framer.flush(), deliver)
            except Exception as err:  # the caller's deliver failed: stream raises it
                self._stop(stopped, fd, err)
                return
            self._stop(stopped, fd, DeviceUnavailable(self._lost("end of input")))

        loop.add_reader(fd, readable)
        try:
            await stopped
        finally:
            # After close() the fd number may already belong to a reopened port with a
            # stream of its own: only the stream still current removes its reader.
            if self._stopped is stopped:
                loop.remove_reader(fd)
                self._stopped = None

    def _stop(self, stopped: asyncio.Future[None], fd: int, err: BaseException) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        if not stopped.done():
            stopped.set_exception(err)

    def _lost(self, reason: str) -> str:
        if isinstance(self.profile, SerialScannerProfile):
            return (
                f"{self.name}: serial port {self.profile.connection.port} is gone ({reason}): "
                "check the cable and that the scanner is plugged in; the edge reopens it"
            )
        if self.profile.connection.path == "-":
            return f"{self.name}: standard input ended ({reason}): nothing more will arrive"
        return f"{self.name}: {self.where} ended ({reason})"

    async def _follow_file(self, fd: int, deliver: Deliver) -> None:
        follow = self._owns_fd  # standard input redirected from a file is not followed
        while True:
            data = os.read(fd, _READ_SIZE)
            if data:
                self._offset += len(data)
                self._hand_over(self._framer.feed(data), deliver)
                await asyncio.sleep(0)  # a big file must not starve the rest of the edge
                continue
            if not follow:
                self._hand_over(self._framer.flush(), deliver)
                raise DeviceUnavailable(self._lost("end of file"))
            await asyncio.sleep(self.file_poll_s)
            if self._fd != fd:
                raise DeviceUnavailable(f"{self.name}: closed while streaming")
            self._check_file_in_place(fd)

    def _check_file_in_place(self, fd: int) -> None:
        assert isinstance(self.profile, WedgeScannerProfile)
        path = self.profile.connection.path
        try:
            info = os.stat(path)
        except FileNotFoundError as err:
            # Whatever appears at the path next is a new file, even should it get this
            # one's inode number back: read it from its start.
            self._file_id, self._offset = None, 0
            raise DeviceUnavailable(
                f"{self.name}: {path} was removed: the edge reads it from its start once it is back"
            ) from err
        if (info.st_dev, info.st_ino) != self._file_id:
            raise DeviceUnavailable(f"{self.name}: {path} was replaced: reading the new file")
        if info.st_size < self._offset:
            # Truncated in place: what is there now is new.
            self._offset = 0
            os.lseek(fd, 0, os.SEEK_SET)
            self._garbage_before += self._framer.garbage
            self._framer = ScanFramer(self.profile.terminator, self.max_length)

    def _hand_over(self, framed: list[FramedScan], deliver: Deliver) -> None:
        if not framed:
            return
        now = datetime.now(UTC)
        scans = []
        for f in framed:
            gs1 = parse_scan(f.text, f.symbology)
            rule = meaning_of(gs1, self.profile.rules)
            scans.append(Scan(f.text, f.symbology, gs1, rule.meaning if rule else None, now))
        self.scans += len(scans)
        deliver(scans)
