"""`cloud-collector`: run ingest and the HTTP API, or only bring the schema up to date."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn

from cloud_collector import edge_status, holds, recall_cases, retention, rollups
from cloud_collector.alerts import delivery, evaluator
from cloud_collector.api import create_app, server_options
from cloud_collector.consumer import IngestCounters, run_consumer
from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings

log = logging.getLogger("cloud_collector")


async def supervised(
    name: str,
    start: Callable[[], Coroutine[Any, Any, None]],
    crashed: Callable[[BaseException], None] | None = None,
) -> None:
    """Run `start()` until cancelled, starting it again with backoff whenever it ends or
    fails: a background task never takes the process (and its API) down with it."""
    delay = 0.5
    while True:
        try:
            await start()
            log.error("%s ended; starting it again in %.1fs", name, delay)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.exception("%s failed; starting it again in %.1fs", name, delay)
            if crashed is not None:
                crashed(err)
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 60.0)


async def serve(settings: CollectorSettings, counters: IngestCounters | None = None) -> None:
    """The HTTP API, with the consumer, the percentiles of ended batches, the alert rules and
    deliveries, and readings retention (when TRACE_READINGS_RETENTION_DAYS is set) beside
    it in one event loop. The process lives as long as its API: the others are supervised
    and restarted, their state visible on /healthz, and never stop the API."""
    counters = counters or IngestCounters()
    keep_days = settings.readings_retention_days
    kept = retention.RetentionState(keep_days) if keep_days is not None else None

    def consumer_crashed(err: BaseException) -> None:
        counters.restarts += 1
        counters.last_error = f"consumer failed: {type(err).__name__}: {err}"

    app = create_app(settings, counters, kept)
    status_settings = edge_status.EdgeStatusSettings()
    keeper = edge_status.KeeperCounters()
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        **server_options(settings),
    )
    server = uvicorn.Server(config)
    background = [
        asyncio.create_task(
            supervised("mqtt-consumer", lambda: run_consumer(settings, counters), consumer_crashed),
            name="mqtt-consumer",
        ),
        asyncio.create_task(
            supervised(
                "batch-percentiles", lambda: rollups.keep_percentiles(settings.database_url)
            ),
            name="batch-percentiles",
        ),
    ]
    # Alerts: the time-based rules, and the delivery queue (webhooks; e-mail with SMTP).
    background += [
        asyncio.create_task(
            supervised(
                "alert-rules",
                lambda: evaluator.keep_evaluating(
                    settings.database_url, settings.alerts_evaluate_every_s
                ),
            ),
            name="alert-rules",
        ),
        asyncio.create_task(
            supervised("alert-delivery", lambda: delivery.keep_delivering(settings)),
            name="alert-delivery",
        ),
    ]
    if status_settings.username is not None:
        app.state.edge_status = keeper
        background.append(
            asyncio.create_task(
                supervised(
                    "edge-status",
                    lambda: edge_status.keep_edge_status(settings, status_settings, keeper),
                ),
                name="edge-status",
            )
        )
    else:
        log.info(
            "edge status: not kept by this collector (TRACE_EDGE_STATUS_USERNAME unset; "
            "issue it an identity of its own: tracectl broker add NAME --kind collector)"
        )
    holds_settings = holds.HoldsSettings()
    if holds_settings.username is not None:
        wake = app.state.holds_wake = asyncio.Event()
        background.append(
            asyncio.create_task(
                supervised("holds", lambda: holds.announce_holds(settings, holds_settings, wake)),
                name="holds",
            )
        )
    else:
        log.warning(
            "holds: not published to the edges by this collector (TRACE_HOLDS_USERNAME "
            "unset): shipping doors flag no held lot until one collector publishes them; "
            "issue it an identity: tracectl broker add NAME --kind collector"
        )
    if settings.recall_cases_refresh_s > 0:
        every_s = settings.recall_cases_refresh_s
        background.append(
            asyncio.create_task(
                supervised(
                    "recall-cases",
                    lambda: recall_cases.keep_cases_current(settings.database_url, every_s),
                ),
                name="recall-cases",
            )
        )
    if kept is not None:
        background.append(
            asyncio.create_task(
                supervised(
                    "readings-retention",
                    lambda: retention.keep_readings(
                        settings.database_url,
                        kept.keep_days,
                        settings.readings_retention_every_s,
                        settings.collector_id,
                        kept,
                    ),
                ),
                name="readings-retention",
            )
        )
    try:
        await server.serve()
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cloud-collector", description=__doc__)
    parser.add_argument("command", choices=["run", "migrate"], nargs="?", default="run")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = CollectorSettings()
    applied = migrate(settings.database_url)
    log.info("schema up to date (applied now: %s)", applied or "none")
    if args.command == "run":
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
