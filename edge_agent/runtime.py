"""The edge agent assembled: device tasks, batch binding, outbox and publisher, supervised
as named tasks in one task group (one failing task stops the agent loudly, never silently)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

import uvicorn

from edge_agent.batch_context import BatchContext
from edge_agent.binding import Binder
from edge_agent.capture import DeviceTask
from edge_agent.control import create_control_app
from edge_agent.drivers import driver_for
from edge_agent.outbox import MemoryOutbox, Outbox
from edge_agent.publisher import Publisher
from edge_agent.settings import EdgeSettings
from edge_agent.site import Site

log = logging.getLogger(__name__)


class _WakingOutbox:
    """Wraps an outbox so that every append wakes the publisher."""

    def __init__(self, inner: Outbox, wake: asyncio.Event) -> None:
        self._inner = inner
        self._wake = wake
        self.epoch = inner.epoch

    def append(self, stream: str, fields: dict[str, Any]) -> int:
        seq = self._inner.append(stream, fields)
        self._wake.set()
        return seq

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class EdgeAgent:
    def __init__(self, settings: EdgeSettings, site: Site, outbox: Outbox | None = None) -> None:
        self.settings = settings
        self.site = site
        self.wake = asyncio.Event()
        self.outbox: Outbox = _WakingOutbox(outbox or MemoryOutbox(), self.wake)  # type: ignore[assignment]
        self.context = BatchContext(settings.state_dir / "edge-state.db", site.line_ids)
        self.binder = Binder(self.context, self.outbox)
        self.devices: dict[str, DeviceTask] = {
            profile.name: DeviceTask(
                line_id, driver_for(profile), profile.poll_interval_s, self.binder
            )
            for line_id, profiles in site.devices.items()
            for profile in profiles
        }
        self.publisher = Publisher(
            site.edge_id,
            self.outbox,
            settings.mqtt,
            self.wake,
            max_records=settings.publish_max_records,
            linger_s=settings.publish_linger_s,
            ack_timeout_s=settings.ack_timeout_s,
        )

    def status(self) -> dict[str, Any]:
        return {
            "edge_id": self.site.edge_id,
            "lines": {
                line: (asdict(b) if (b := self.context.active(line)) else None)
                for line in self.site.line_ids
            },
            "devices": {name: asdict(task.health) for name, task in self.devices.items()},
            "publisher": asdict(self.publisher.health),
            "outbox": {
                "epoch": self.outbox.epoch,
                "depth": {s: self.outbox.depth(s) for s in self.outbox.streams()},
            },
        }

    async def run(self, poll: bool = True, control: bool = True) -> None:
        """Run until cancelled. poll=False leaves polling to the caller (tests call poll_once)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.publisher.run(), name="publisher")
            if poll:
                for name, task in self.devices.items():
                    group.create_task(task.run(), name=f"device:{name}")
            if control:
                config = uvicorn.Config(
                    create_control_app(self.binder, self.status),
                    host=self.settings.control_host,
                    port=self.settings.control_port,
                    log_level="warning",
                    lifespan="off",  # nothing to set up, and a clean exit when cancelled
                )
                group.create_task(uvicorn.Server(config).serve(), name="control-api")

    def close(self) -> None:
        self.context.close()
