"""One supervised task per device: capture on schedule or by subscription, bind every
sample, and survive failures.

A failed read never ends the task: an unreachable device is reconnected with backoff, and
the gap is recorded as device_offline / device_online events; a bad value is a bad-quality
reading, bound and published like any other.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from edge_agent.binding import Binder
from edge_agent.cancellation import raise_if_cancelled
from protocols.driver import (
    DeviceMisconfigured,
    DeviceUnavailable,
    PollingDriver,
    Sample,
    StreamingDriver,
    SubscribingDriver,
)

log = logging.getLogger(__name__)


@dataclass
class DeviceHealth:
    connected: bool = False
    polls: int = 0
    readings: int = 0
    failures: int = 0
    last_error: str | None = None
    last_read_at: datetime | None = None
    offline_since: datetime | None = None


class DeviceTask:
    def __init__(
        self,
        line_id: str,
        driver: PollingDriver | StreamingDriver,
        interval_s: float,
        binder: Binder,
        subscribe: bool = False,
        on_events: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self.line_id = line_id  # the station: a line, or a dock door
        self.driver = driver
        self.interval_s = interval_s
        self.binder = binder
        self.subscribe = subscribe and isinstance(driver, SubscribingDriver)
        # A streaming device (RFID reader, scanner) reports events, handled by its station.
        self.on_events = on_events
        self.health = DeviceHealth()
        # The last sample of each tag and when it was taken, for the edge's status.
        self.last_values: dict[str, tuple[Sample, datetime]] = {}
        self._announced_offline = False

    async def connect(self) -> None:
        await self.driver.open()
        self.health.connected = True

    def _data_flows(self) -> datetime:
        if self._announced_offline:
            # Online means data flows again, not that a port opened: a serial port or a
            # gateway opens even when the device behind it is still silent.
            self.binder.device_event(self.line_id, self.driver.name, True, None)
            self._announced_offline = False
            self.health.offline_since = None
        self.health.polls += 1
        self.health.last_read_at = datetime.now(UTC)
        return self.health.last_read_at

    def deliver(self, samples: list[Sample]) -> None:
        taken_at = self._data_flows()
        self.binder.readings(self.line_id, self.driver.name, samples, taken_at)
        self.last_values.update((s.tag, (s, taken_at)) for s in samples)
        self.health.readings += len(samples)

    def deliver_events(self, items: list[Any]) -> None:
        self._data_flows()
        assert self.on_events is not None
        self.on_events(items)
        self.health.readings += len(items)

    async def poll_once(self) -> int:
        """Read every tag once and bind the samples; returns how many were read."""
        samples = await cast(PollingDriver, self.driver).read()
        self.deliver(samples)
        return len(samples)

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self.connect()
                backoff = 0.5
                driver = self.driver
                if self.on_events is not None and isinstance(driver, StreamingDriver):
                    await driver.stream(self.deliver_events)
                elif self.subscribe and isinstance(driver, SubscribingDriver):
                    await driver.subscribe(self.deliver)
                else:
                    await self._poll_forever()
            except DeviceUnavailable as err:
                self._failed(err)
                log.warning("%s; reconnecting in %.1fs", err, backoff)
            except DeviceMisconfigured as err:
                # Retrying fast will not fix a profile; keep trying slowly so a corrected
                # device (or profile push) recovers without a restart.
                self._failed(err)
                backoff = 60.0
                log.error("%s; fix the profile (retrying in %.0fs)", err, backoff)
            await self.driver.close()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 30.0)

    def _failed(self, err: Exception) -> None:
        self.health.connected = False
        self.health.failures += 1
        self.health.last_error = str(err)
        if not self._announced_offline:
            self.health.offline_since = datetime.now(UTC)
            self.binder.device_event(self.line_id, self.driver.name, False, str(err))
            self._announced_offline = True

    async def _poll_forever(self) -> None:
        # A fixed schedule, not sleep-after-read: the poll rate does not drift with read
        # time, and a late poll skips missed slots rather than bursting to catch up.
        next_at = time.monotonic()
        while True:
            await self.poll_once()
            raise_if_cancelled()
            next_at += self.interval_s
            now = time.monotonic()
            if next_at < now:
                next_at = now + self.interval_s - ((now - next_at) % self.interval_s)
            await asyncio.sleep(next_at - now)
