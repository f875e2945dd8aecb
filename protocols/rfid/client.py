"""Serial UHF RFID reader driver: a `StreamingDriver` that delivers timed tag reads.

The port is opened with pyserial and read without blocking from the event loop (the
loop watches the port's file descriptor), so a reader sending hundreds of reports per
second costs no thread. Every failure is translated here, once: a port that cannot be
opened, goes away or errors is `DeviceUnavailable` (the supervisor reopens it); settings
the port refuses, or a reader that refuses to start reading, are `DeviceMisconfigured`.
Garbage on the line is never an exception: the decoder counts it (see `counters`).

Mercury readers are told to start continuous reading when the port opens (the 0x2F
command in `mercury.START_CONTINUOUS_READ`) and to stop when it closes, so a reopened
port starts from a clean stream. ASCII readers are sent nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import serial

from protocols.driver import DeviceMisconfigured, DeviceUnavailable
from protocols.rfid import mercury
from protocols.rfid.ascii import AsciiDecoder
from protocols.rfid.profile import RfidReaderProfile
from protocols.rfid.records import DecoderCounters, TagDecoder, TagRead, TagRecord

_READ_SIZE = 4096
# Bits on the wire per byte with start and stop bits, and the longest Mercury frame: a
# frame is sent in one go, so a pause of a few frame times inside one means it was cut.
_BITS_PER_BYTE = 10
_LONGEST_FRAME = 262
_MIN_IDLE_S = 0.1


def new_decoder(framing: str) -> TagDecoder:
    if framing == "mercury":
        return mercury.MercuryDecoder()
    if framing == "ascii":
        return AsciiDecoder()
    raise DeviceMisconfigured(f"framing {framing!r} is not supported: use mercury or ascii")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RfidReaderDriver:
    """Streams the tag reports of one serial RFID reader (one profile)."""

    def __init__(
        self, profile: RfidReaderProfile, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self.name = profile.name
        self.profile = profile
        self._clock = clock
        self._serial: serial.Serial | None = None
        self.decoder: TagDecoder = new_decoder(profile.framing)
        conn = profile.connection
        self.idle_s = max(_MIN_IDLE_S, 3 * _LONGEST_FRAME * _BITS_PER_BYTE / conn.baudrate)
        self._idle_timer: asyncio.TimerHandle | None = None
        # Since creation, across reopens: what a diagnostics page shows.
        self.bytes_received = 0
        self.reads_delivered = 0
        self.opened = 0
        self._closed_counters = DecoderCounters()

    @property
    def counters(self) -> DecoderCounters:
        """The decoder's counters since creation (a reopen starts a fresh decoder)."""
        now, before = self.decoder.counters, self._closed_counters
        return DecoderCounters(
            *(getattr(now, f) + getattr(before, f) for f in DecoderCounters.__dataclass_fields__)
        )

    def diagnostics(self) -> dict[str, Any]:
        counters = self.counters
        return {
            "port": self.profile.connection.port,
            "framing": self.profile.framing,
            "open": self._serial is not None,
            "opened": self.opened,
            "bytes_received": self.bytes_received,
            "reads_delivered": self.reads_delivered,
            "frames": counters.frames,
            "bad_frames": counters.bad_frames,
            "bytes_discarded": counters.bytes_discarded,
            "unusable_frames": counters.unusable_frames,
        }

    @property
    def _settings(self) -> str:
        c = self.profile.connection
        return f"{c.baudrate} {c.bytesize}{c.parity}{c.stopbits}"

    async def open(self) -> None:
        await self.close()
        conn = self.profile.connection
        try:
            port = serial.Serial(
                port=conn.port,
                baudrate=conn.baudrate,
                parity=conn.parity,
                stopbits=conn.stopbits,
                bytesize=conn.bytesize,
                timeout=0,
                write_timeout=2,
                exclusive=True,
            )
        except (termios.error, ValueError) as err:
            raise self._refused(err) from err
        except (serial.SerialException, OSError) as err:
            if "configure port" in str(err):  # opened, then refused the settings (or no tty)
                raise self._refused(err) from err
            raise DeviceUnavailable(
                f"{self.name}: cannot open {conn.port} ({err}): check that the path exists "
                "(ls /dev/serial/by-id/), the adapter is plugged in, the edge user is in the "
                "dialout group and no other program (or profile) has the port open"
            ) from err
        try:
            # pyserial's timeout=0 leaves VMIN at 0, where an empty read returns b"" and
            # looks like a hang-up; with VMIN 1 "nothing yet" is EAGAIN and b"" is a hang-up.
            attrs = termios.tcgetattr(port.fileno())
            attrs[6][termios.VMIN] = 1
            termios.tcsetattr(port.fileno(), termios.TCSANOW, attrs)
        except termios.error as err:
            port.close()
            raise self._refused(err) from err
        self._serial = port
        self.opened += 1
        # A fresh decoder: half a frame from before a reconnect must not be glued onto the
        # first bytes after it.
        self.decoder = new_decoder(self.profile.framing)
        if self.profile.framing == "mercury":
            self._write(mercury.START_CONTINUOUS_READ)

    def _refused(self, err: BaseException) -> DeviceMisconfigured:
        # pyserial lets the kernel's refusal of a setting through as termios.error, or
        # wraps it ("Could not configure port"); a path that is no serial port ends here too.
        return DeviceMisconfigured(
            f"{self.name}: serial port {self.profile.connection.port} refuses {self._settings} "
            f"({err}): check connection.baudrate/parity/bytesize/stopbits against the reader's "
            "manual and what the adapter supports, and that connection.port is a serial port"
        )

    def _write(self, data: bytes) -> None:
        assert self._serial is not None
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as err:
            raise DeviceUnavailable(
                f"{self.name}: writing to {self.profile.connection.port} failed: {err}"
            ) from err

    async def close(self) -> None:
        self._cancel_idle()
        port, self._serial = self._serial, None
        if port is None:
            return
        if self.profile.framing == "mercury":
            # A port already gone needs no stop: the reader talks to no one anyway.
            with contextlib.suppress(serial.SerialException, OSError):
                port.write(mercury.STOP_CONTINUOUS_READ)
        port.close()
        counters = self.decoder.counters
        for name in DecoderCounters.__dataclass_fields__:
            setattr(
                self._closed_counters,
                name,
                getattr(self._closed_counters, name) + getattr(counters, name),
            )
        self.decoder = new_decoder(self.profile.framing)

    async def stream(self, deliver: Callable[[list[TagRead]], None]) -> None:
        """Call `deliver` with each batch of reads as they arrive; return only by raising
        (DeviceUnavailable when the port is lost, DeviceMisconfigured when the reader
        refuses to read)."""
        if self._serial is None:
            raise DeviceUnavailable(f"{self.name}: {self.profile.connection.port} is not open")
        loop = asyncio.get_running_loop()
        fd = self._serial.fileno()
        failed: asyncio.Future[None] = loop.create_future()

        def fail(err: BaseException) -> None:
            loop.remove_reader(fd)
            self._cancel_idle()
            if not failed.done():
                failed.set_exception(err)

        def readable() -> None:
            try:
                self._pump(fd, deliver)
            except Exception as err:
                fail(err)
                return
            self._cancel_idle()
            self._idle_timer = loop.call_later(self.idle_s, quiet)

        def quiet() -> None:
            self._idle_timer = None
            try:
                # The loop may have been busy: bytes that arrived meanwhile come first.
                if self._pump(fd, deliver):
                    self._idle_timer = loop.call_later(self.idle_s, quiet)
                    return
                self._deliver(self.decoder.idle(), deliver)
            except Exception as err:
                fail(err)

        loop.add_reader(fd, readable)
        try:
            await failed
        finally:
            loop.remove_reader(fd)
            self._cancel_idle()

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _pump(self, fd: int, deliver: Callable[[list[TagRead]], None]) -> int:
        """Read everything waiting, decode and deliver it; returns the bytes read."""
        total = 0
        while True:
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                break
            except OSError as err:
                raise DeviceUnavailable(
                    f"{self.name}: reading {self.profile.connection.port} failed ({err}): the "
                    "adapter was unplugged or the reader lost power"
                ) from err
            if not data:
                raise DeviceUnavailable(
                    f"{self.name}: {self.profile.connection.port} closed (hang-up): the "
                    "adapter was unplugged or the reader lost power"
                )
            total += len(data)
            self._deliver(self.decoder.feed(data), deliver)
            if len(data) < _READ_SIZE:
                break
        self.bytes_received += total
        self._check_refusal()
        return total

    def _deliver(self, records: list[TagRecord], deliver: Callable[[list[TagRead]], None]) -> None:
        if not records:
            return
        now = self._clock()
        reads = [
            TagRead(
                r.epc_hex, r.antenna, None if r.rssi_dbm is None else float(r.rssi_dbm), r.pc, now
            )
            for r in records
        ]
        self.reads_delivered += len(reads)
        deliver(reads)

    def _check_refusal(self) -> None:
        if not isinstance(self.decoder, mercury.MercuryDecoder):
            return
        while self.decoder.acknowledged:
            reply = self.decoder.acknowledged.popleft()
            if reply.status not in (None, mercury.STATUS_OK):
                raise DeviceMisconfigured(
                    f"{self.name}: the reader refused to start continuous reading (status "
                    f"0x{reply.status:04X}): check the reader's region, antenna and power "
                    "settings with the vendor's tool (Universal Reader Assistant)"
                )
