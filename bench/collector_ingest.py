"""Collector ingest throughput: readings per second through parse -> validate -> commit
(binary COPY, rollups, sequence bookkeeping) on one connection, without the broker, for
new messages and for resends of committed ones (the resend pays the comparison with what
was committed under its numbers).

    eval "$(deploy/services.sh up)"; .venv/bin/python bench/collector_ingest.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from cloud_collector.ingest import ingest
from cloud_collector.migrate import migrate
from protocols.mqtt import topics

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def message(edge: str, first: int, size: int, tags: int) -> bytes:
    records = [
        {
            "kind": "reading",
            "seq": seq,
            "time": (T0 + timedelta(milliseconds=100 * seq)).isoformat(),
            "line": "line-1",
            "batch": "BENCH-1",
            "device": "plc-1",
            "tag": f"tag-{seq % tags}",
            "value": seq * 0.5,
            "unit": "Cel",
        }
        for seq in range(first, first + size)
    ]
    body = {"edge_id": edge, "stream": "readings", "epoch": "e1", "records": records}
    return json.dumps(body).encode()


async def run(url: str, messages: int, size: int, tags: int) -> tuple[float, float]:
    edge = f"bench-{uuid.uuid4().hex[:8]}"
    topic = topics.data(edge, "readings")
    payloads = [message(edge, i * size, size, tags) for i in range(messages)]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for payload in payloads:
            outcome = await ingest(conn, topic, payload)
            assert outcome.ack is not None and outcome.inserted == size, outcome
        new = messages * size / (time.perf_counter() - start)
        start = time.perf_counter()
        for payload in payloads:
            outcome = await ingest(conn, topic, payload)
            assert outcome.ack is not None and outcome.ack.duplicate, outcome
        resent = messages * size / (time.perf_counter() - start)
    return new, resent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=500, help="readings per message")
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    url = os.environ["TRACE_DATABASE_URL"]
    migrate(url)
    figures = [asyncio.run(run(url, args.messages, args.size, args.tags)) for _ in range(args.runs)]
    for label, values in (("new", [f[0] for f in figures]), ("resent", [f[1] for f in figures])):
        print(
            f"{label:7s} readings/s: median {statistics.median(values):,.0f}  "
            f"min {min(values):,.0f}  max {max(values):,.0f}  ({args.runs} runs of "
            f"{args.messages} x {args.size})"
        )


if __name__ == "__main__":
    main()
