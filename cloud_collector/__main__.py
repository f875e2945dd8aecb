"""`cloud-collector`: run ingest and the HTTP API, or only bring the schema up to date."""

from __future__ import annotations

import argparse
import asyncio
import logging

import uvicorn

from cloud_collector import rollups
from cloud_collector.api import create_app, server_options
from cloud_collector.consumer import IngestCounters, run_consumer
from cloud_collector.migrate import migrate
from cloud_collector.settings import CollectorSettings


async def serve(settings: CollectorSettings) -> None:
    """Consumer, API and the percentiles of ended batches in one event loop; any of them
    failing stops the process."""
    counters = IngestCounters()
    config = uvicorn.Config(
        create_app(settings, counters),
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        **server_options(settings),
    )
    server = uvicorn.Server(config)
    consumer = asyncio.create_task(run_consumer(settings, counters), name="mqtt-consumer")
    api = asyncio.create_task(server.serve(), name="http-api")
    percentiles = asyncio.create_task(
        rollups.keep_percentiles(settings.database_url), name="batch-percentiles"
    )
    tasks = {consumer, api, percentiles}
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for task in done:
        task.result()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cloud-collector", description=__doc__)
    parser.add_argument("command", choices=["run", "migrate"], nargs="?", default="run")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = CollectorSettings()
    applied = migrate(settings.database_url)
    logging.getLogger("cloud_collector").info(
        "schema up to date (applied now: %s)", applied or "none"
    )
    if args.command == "run":
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
