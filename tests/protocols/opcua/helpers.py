"""What the OPC UA tests share: profiles built from data, a recorder for subscriptions, and
a relay that can go silent like a pulled network cable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from device_profiles.schema import OpcUaProfile, parse_profile
from protocols.driver import Sample
from protocols.opcua.client import OpcUaDriver

# Bounded, generous waits: a loaded 2-core machine is slow, never this slow.
WAIT_S = 20.0


def profile_for(endpoint: str, tags: list[dict[str, Any]], **settings: Any) -> OpcUaProfile:
    connection = {"endpoint": endpoint, "timeout_s": 4.0} | settings.pop("connection", {})
    profile = parse_profile(
        {
            "profile_version": 1,
            "name": "device-under-test",
            "protocol": "opcua",
            "connection": connection,
            "publishing_interval_s": 0.1,
            "sampling_interval_s": 0.05,
            "tags": tags,
        }
        | settings
    )
    assert isinstance(profile, OpcUaProfile)
    return profile


def as_record(sample: Sample) -> dict[str, Any]:
    """A sample as a case file writes it: fields that are None are left out (but value)."""
    record: dict[str, Any] = {"tag": sample.tag, "value": sample.value, "quality": sample.quality}
    for key in ("unit", "text", "detail", "device_time"):
        if getattr(sample, key) is not None:
            record[key] = getattr(sample, key)
    return record


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


class Recorder:
    """The `deliver` callback of a subscription: keeps every batch, and lets a test wait for
    a condition on them while noticing when the subscription itself failed."""

    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def __call__(self, batch: list[Sample]) -> None:
        self.batches.append(batch)
        self._changed.set()

    @property
    def samples(self) -> list[Sample]:
        return [s for batch in self.batches for s in batch]

    def values(self, tag: str) -> list[float | None]:
        return [s.value for s in self.samples if s.tag == tag]

    def latest(self, tag: str) -> Sample | None:
        return next((s for s in reversed(self.samples) if s.tag == tag), None)

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                if self.task is not None and self.task.done():
                    self.task.result()  # the subscription's own error explains the failure
                    raise AssertionError(f"subscription ended before {what}")
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await self._changed.wait()


@contextlib.asynccontextmanager
async def subscribed(driver: OpcUaDriver) -> AsyncIterator[Recorder]:
    """A running `driver.subscribe` feeding a Recorder; cancelled on exit."""
    recorder = Recorder()
    recorder.task = asyncio.create_task(driver.subscribe(recorder))
    try:
        yield recorder
    finally:
        recorder.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await recorder.task


class SilentLink:
    """A TCP relay in front of a server. `go_silent()` drops every byte from then on while
    keeping both connections open: what a pulled cable or a hung PLC looks like to a client,
    with no FIN or RST to notice."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.silent = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def go_silent(self) -> None:
        self.silent = True

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.silent:
                writer.write(data)
                await writer.drain()
        writer.close()
