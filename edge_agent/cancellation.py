"""A cancel that a library lost. On Python 3.11, `asyncio.wait_for` drops a cancel that
arrives as the awaited future completes (fixed in 3.12); pymodbus reads and aiomqtt publishes
await through it. The task then runs on, only marked as `cancelling()`, and the agent's
task group waits on it for ever when the agent stops or a device is removed. A loop that
awaits such a library calls `raise_if_cancelled()` after it."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
