"""A cancel that Python 3.11 may have swallowed, honoured at a loop's next turn.

Python 3.11's asyncio.wait_for returns the awaited result and drops the cancel when both
arrive in the same loop turn (fixed in 3.12). pymodbus, asyncua and aiomqtt await every
request through it, so a task stopped by a site apply or the agent's shutdown could run on
for ever while its stopper waits for it. Loops of the edge call `honour_cancel()` once per
turn: the cancel request is still counted on the task, so it lands there.
"""

from __future__ import annotations

import asyncio


def honour_cancel() -> None:
    """Raise CancelledError if this task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
