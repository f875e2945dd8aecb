"""A serial cable made of pseudo-terminals, for running serial devices in tests and demos.

`SerialLink` opens two pseudo-terminal pairs and relays bytes between their master sides in
the event loop. A device simulator opens one end by path (`device_port`), the driver under
test opens the other (`edge_port`), and both go through pyserial exactly as they would open
/dev/ttyUSB0: real frames, real CRCs, nothing patched.

What a pty does not model: baud rate and stop bits are accepted and ignored (bytes move,
not bits), so a settings mismatch never shows here; test that against hardware.

The cable can misbehave on purpose: `inject` puts noise on the line now, `corrupt_next`
damages the next burst of bytes (a reply hit by interference). Counters say what happened.
"""

from __future__ import annotations

import asyncio
import os
import tty
from typing import Literal

End = Literal["device", "edge"]
_ENDS: tuple[End, End] = ("device", "edge")

# Enough for any Modbus RTU frame (256 bytes) several times over.
_READ_SIZE = 4096


class SerialLink:
    """Two linked pseudo-terminals: what one end writes, the other end reads.

    Use it as an async context manager (or `open()` / `close()` inside a running loop):

        async with SerialLink() as link, ModbusRtuSimulator(profile, link.device_port):
            edge = profile.connection.model_copy(update={"port": link.edge_port})
            driver = ModbusDriver(profile.model_copy(update={"connection": edge}))

    Only 8 data bits without parity work over it: recent Linux kernels refuse parity and
    7 data bits on a pseudo-terminal (EINVAL), and a pty could not honour them anyway.
    """

    def __init__(self) -> None:
        self.device_port = ""
        self.edge_port = ""
        # Bytes delivered toward each end, noise included; bytes dropped because nobody
        # read that end and its buffer was full (a UART overrun, in hardware terms).
        self.delivered: dict[End, int] = dict.fromkeys(_ENDS, 0)
        self.dropped: dict[End, int] = dict.fromkeys(_ENDS, 0)
        self.injected = 0  # noise bytes put on the line by inject()
        self.corrupted = 0  # bursts damaged by corrupt_next()
        self._corrupt_pending: dict[End, int] = dict.fromkeys(_ENDS, 0)
        self._masters: dict[End, int] = {}
        self._slaves: dict[End, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: OSError | None = None

    def open(self) -> None:
        if self._loop is not None:
            raise RuntimeError(f"serial link {self.edge_port} <-> {self.device_port} is open")
        self._loop = asyncio.get_running_loop()
        for end in _ENDS:
            master, slave = os.openpty()
            # Raw from the start: a fresh pty echoes and edits lines, which would bounce a
            # request back at its sender before pyserial gets to configure the port.
            tty.setraw(slave)
            os.set_blocking(master, False)
            self._masters[end], self._slaves[end] = master, slave
        # Holding each slave open keeps the pty alive while a simulator or driver closes
        # and reopens its end; otherwise the master reads EIO until someone reopens it.
        self.device_port = os.ttyname(self._slaves["device"])
        self.edge_port = os.ttyname(self._slaves["edge"])
        self._loop.add_reader(self._masters["edge"], self._relay, "device")
        self._loop.add_reader(self._masters["device"], self._relay, "edge")

    def close(self) -> None:
        if self._loop is not None:
            for fd in self._masters.values():
                self._loop.remove_reader(fd)
            self._loop = None
        for fd in [*self._masters.values(), *self._slaves.values()]:
            os.close(fd)
        self._masters.clear()
        self._slaves.clear()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError(f"serial link relay failed: {failure}") from failure

    async def __aenter__(self) -> SerialLink:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def inject(self, noise: bytes, toward: End = "edge") -> None:
        """Put `noise` on the line now, as interference would, arriving at `toward`."""
        self.injected += len(noise)
        self._deliver(toward, noise)

    def corrupt_next(self, toward: End = "edge") -> None:
        """Flip one bit of the last byte of the next burst relayed toward `toward`.

        A device writes a reply in one go, so the burst is the whole frame and the byte hit
        is its CRC; should the kernel split a frame, the byte hit lies inside it instead,
        and that frame fails its CRC check all the same.
        """
        self._corrupt_pending[toward] += 1

    def _relay(self, toward: End) -> None:
        source = self._masters["edge" if toward == "device" else "device"]
        try:
            data = os.read(source, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as err:
            # A relay that keeps failing would spin the loop: stop this direction and let
            # close() raise, so the test that used the link fails with the reason.
            self._failure = err
            if self._loop is not None:
                self._loop.remove_reader(source)
            return
        if self._corrupt_pending[toward] and data:
            self._corrupt_pending[toward] -= 1
            self.corrupted += 1
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        self._deliver(toward, data)

    def _deliver(self, toward: End, data: bytes) -> None:
        if not self._masters:
            raise RuntimeError("serial link is closed: open it before putting bytes on it")
        try:
            written = os.write(self._masters[toward], data)
        except BlockingIOError:
            written = 0
        self.delivered[toward] += written
        self.dropped[toward] += len(data) - written
