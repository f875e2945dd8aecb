"""A serial RFID reader for tests and the demo (not used by the edge runtime).

It sits on the device end of a serial port (in tests, `SerialLink.device_port`) and sends
tag reports in the profile's framing, with real CRCs: a pallet passing a dock-door gate,
bursts of hundreds of reads per second, and damaged frames or line noise on demand. A
Mercury simulator, like the real module, sends nothing until told to start continuous
reading (`require_start`), and answers the start and stop commands.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from typing import Literal, Self

import serial

from protocols.rfid import mercury
from protocols.rfid.ascii import format_line
from protocols.rfid.records import TagRecord

Framing = Literal["mercury", "ascii"]

# What a UART receiving at the wrong baud rate passes on: plenty of 0x00, 0x80, 0xF0, 0xFE,
# and 0xFF, which a Mercury decoder must take for a frame start and then reject.
WRONG_BAUD_NOISE = bytes.fromhex("00F08080FE0078FFE0F80080F000FC")


@dataclass(slots=True)
class Sent:
    """What the simulator put on the line, to compare with what the edge decoded."""

    good: int = 0  # tag reports sent intact
    corrupt: int = 0  # tag reports sent with a damaged CRC (mercury) or a broken line (ascii)
    noise_bursts: int = 0  # bursts of line noise
    noise_bytes: int = 0


class RfidReaderSimulator:
    def __init__(
        self,
        framing: Framing,
        port: str,
        *,
        require_start: bool = True,
        line_style: str = "keyvalue",
        refuse_start_status: int | None = None,
    ) -> None:
        self.framing = framing
        self.port = port
        self.line_style = line_style
        # A Mercury status word to answer the start command with instead of starting
        # (e.g. 0x0105, invalid parameter), to show a reader that refuses to read.
        self.refuse_start_status = refuse_start_status
        self.streaming = framing == "ascii" or not require_start
        self.commands: list[mercury.Frame] = []
        self.sent = Sent()
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._commands = mercury.FrameDecoder(replies=False)
        self._started = asyncio.Event()
        if self.streaming:
            self._started.set()
        self._clock_ms = 0

    async def start(self) -> None:
        try:
            self._serial = serial.Serial(self.port, baudrate=115200, timeout=0)
        except (serial.SerialException, OSError) as err:
            raise RuntimeError(f"RFID simulator cannot open {self.port}: {err}") from err
        self._fd = self._serial.fileno()
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._on_command_bytes)

    async def stop(self) -> None:
        if self._serial is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._serial.close()
            self._serial = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_started(self, timeout_s: float = 5.0) -> None:
        """Until the edge has told the reader to start reading (at once for ascii)."""
        async with asyncio.timeout(timeout_s):
            await self._started.wait()

    def _on_command_bytes(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            return  # the line went away; the test that closed it knows
        for frame in self._commands.feed(data):
            self.commands.append(frame)
            if self.framing == "mercury" and frame.opcode == mercury.OPCODE_MULTI_PROTOCOL_TAG_OP:
                self._on_tag_op(frame)

    def _on_tag_op(self, frame: mercury.Frame) -> None:
        option = frame.data[2] if len(frame.data) > 2 else 0
        if option == mercury.CONTINUOUS_READ_STARTED and self.refuse_start_status is not None:
            reply = mercury.encode_response(frame.opcode, self.refuse_start_status)
        else:
            reply = mercury.encode_response(frame.opcode, mercury.STATUS_OK, bytes([option]))
        if option == mercury.CONTINUOUS_READ_STARTED and self.refuse_start_status is None:
            self.streaming = True
            self._started.set()
        elif option == mercury.CONTINUOUS_READ_STOPPED:
            self.streaming = False
            self._started.clear()
        asyncio.get_running_loop().create_task(self._write(reply))

    def encode(self, record: TagRecord) -> bytes:
        if self.framing == "mercury":
            self._clock_ms += 1
            return mercury.encode_tag_report(record, timestamp_ms=self._clock_ms)
        return format_line(record, self.line_style)

    def damage(self, frame: bytes) -> bytes:
        """The frame as interference leaves it: a flipped bit in the CRC (mercury), or a
        hex digit that is no hex digit any more (ascii)."""
        if self.framing == "mercury":
            return frame[:-1] + bytes([frame[-1] ^ 0x01])
        at = frame.index(b":") + 1 if b":" in frame else 0
        return frame[:at] + b"G" + frame[at + 1 :]

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._serial is None:
                raise RuntimeError(f"RFID simulator on {self.port} is stopped")
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                written = 0
            view = view[written:]
            if view:
                await asyncio.sleep(0.001)  # the line is full: let the other end read

    async def send(self, record: TagRecord, *, corrupt: bool = False) -> None:
        frame = self.encode(record)
        if corrupt:
            await self._write(self.damage(frame))
            self.sent.corrupt += 1
        else:
            await self._write(frame)
            self.sent.good += 1

    async def noise(self, data: bytes = WRONG_BAUD_NOISE) -> None:
        await self._write(data)
        self.sent.noise_bursts += 1
        self.sent.noise_bytes += len(data)

    async def send_raw(self, data: bytes) -> None:
        await self._write(data)

    async def burst(
        self,
        records: list[TagRecord],
        *,
        reads_per_s: float = 500,
        corrupt_every: int = 0,
        noise_every: int = 0,
    ) -> Sent:
        """Send `records` at `reads_per_s`; every `corrupt_every`-th one damaged and a burst
        of noise after every `noise_every`-th one (0: never). Returns the running totals."""
        # Paced in 10 ms slices, as a reader's search cycles come, rather than one write.
        per_slice = max(1, math.ceil(reads_per_s / 100))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i, record in enumerate(records, start=1):
            await self.send(record, corrupt=bool(corrupt_every) and i % corrupt_every == 0)
            if noise_every and i % noise_every == 0:
                await self.noise()
            if i % per_slice == 0:
                delay = started + i / reads_per_s - loop.time()
                await asyncio.sleep(max(0.0, delay))
        return self.sent

    async def pass_pallet(
        self,
        epc: bytes,
        *,
        outside_port: int = 1,
        inside_port: int = 2,
        duration_s: float = 1.5,
        reads_per_s: float = 60,
        inbound: bool = True,
    ) -> int:
        """A pallet crossing the gate: seen by the first antenna, then by both, then by
        the second, RSSI rising towards the middle and falling again. Returns reads sent."""
        first, last = (outside_port, inside_port) if inbound else (inside_port, outside_port)
        count = max(3, round(duration_s * reads_per_s))
        for i in range(count):
            progress = i / (count - 1)
            if progress < 1 / 3:
                ports = [first]
            elif progress <= 2 / 3:
                ports = [first, last]
            else:
                ports = [last]
            # Strongest in the middle of the door: -75 dBm at the edges, -45 in the middle.
            rssi = round(-75 + 30 * math.sin(math.pi * progress))
            for port in ports:
                await self.send(TagRecord(epc=epc, antenna=port, rssi_dbm=rssi))
            await asyncio.sleep(1 / reads_per_s)
        return self.sent.good
