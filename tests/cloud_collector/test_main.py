"""`cloud-collector run`: the API outlives whatever happens to ingest beside it."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from cloud_collector import __main__ as collector_main
from cloud_collector.consumer import IngestCounters
from cloud_collector.settings import CollectorSettings
from tests.conftest import free_port, now_true, until


async def test_the_api_keeps_answering_when_the_consumer_fails(
    collector_settings: CollectorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_consumer(*args: object) -> None:
        raise RuntimeError("injected: ingest is broken")

    monkeypatch.setattr(collector_main, "run_consumer", failing_consumer)
    settings = collector_settings.model_copy(update={"api_port": free_port()})
    counters = IngestCounters()
    serving = asyncio.create_task(collector_main.serve(settings, counters))
    try:
        await until(lambda: now_true(counters.restarts >= 2), 15, "the consumer restarted twice")
        assert counters.last_error == "consumer failed: RuntimeError: injected: ingest is broken"
        assert not serving.done()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api_port}") as http:
            answer = await until(
                lambda: _healthz(http), 15, "the API answering /healthz after the failures"
            )
        assert answer.status_code == 200
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def _healthz(http: httpx.AsyncClient) -> httpx.Response | None:
    try:
        return await http.get("/healthz")
    except httpx.TransportError:
        return None  # not listening yet
