"""A loop whose library lost a cancel (Python 3.11's asyncio.wait_for race) still ends."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from edge_agent.cancellation import honour_cancel


@pytest.mark.parametrize("guarded", [True, False])
async def test_a_cancel_a_library_lost_still_ends_the_loop(guarded: bool) -> None:
    stop = asyncio.Event()  # ends the unguarded loop, which no cancel can

    async def loop() -> None:
        while not stop.is_set():
            # What the library's wait_for does when the cancel meets its reply:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)
            if guarded:
                honour_cancel()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    stop.set()
    await asyncio.wait({task}, timeout=1.0)
    assert bool(done) is guarded and task.done()
    assert task.cancelled() is guarded
