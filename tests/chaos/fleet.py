"""A small plant under test: a private broker, collector processes, edge agent processes
each polling its own counting device, and the database they write. A scenario starts it,
injects its fault, and asks how long until everything produced is committed
(`until_committed`) and whether the database reconciles with what the devices served
(`finish`).

Its size and the length of its outages come from `Scale`, read from CHAOS_* environment
variables, so `make soak` runs the same scenarios bigger and longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cloud_collector.broker_identities import IdentityKind
from tests.chaos import reconcile
from tests.chaos.world import COUNTER, DEVICE, CollectorProcess, CountingDevice, EdgeProcess
from tests.conftest import MosquittoProcess


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class Scale:
    """How big and how long (CI's short run by default; `make soak` sets them)."""

    edges: int = 2  # CHAOS_EDGES
    poll_s: float = 0.05  # CHAOS_POLL_S: each device's poll interval (2 readings a poll)
    warmup_s: float = 1.5  # CHAOS_WARMUP_S: traffic before each fault
    outage_s: float = 2.5  # CHAOS_OUTAGE_S: how long a stopped service stays down
    rounds: int = 1  # CHAOS_ROUNDS: the fault repeated this many times per scenario
    storm_messages: int = 300  # CHAOS_STORM_MESSAGES: malformed messages of the storm
    recovery_timeout_s: float = 60.0  # CHAOS_RECOVERY_TIMEOUT_S

    @classmethod
    def from_env(cls) -> Scale:
        d = cls()
        return cls(
            edges=int(_env_float("CHAOS_EDGES", d.edges)),
            poll_s=_env_float("CHAOS_POLL_S", d.poll_s),
            warmup_s=_env_float("CHAOS_WARMUP_S", d.warmup_s),
            outage_s=_env_float("CHAOS_OUTAGE_S", d.outage_s),
            rounds=int(_env_float("CHAOS_ROUNDS", d.rounds)),
            storm_messages=int(_env_float("CHAOS_STORM_MESSAGES", d.storm_messages)),
            recovery_timeout_s=_env_float("CHAOS_RECOVERY_TIMEOUT_S", d.recovery_timeout_s),
        )


@dataclass
class Fleet:
    folder: Path
    database_url: str
    broker: MosquittoProcess
    scale: Scale
    share_group: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:6]}")
    collectors: list[CollectorProcess] = field(default_factory=list)
    edges: list[EdgeProcess] = field(default_factory=list)
    batches: dict[str, str] = field(default_factory=dict)  # edge -> its batch
    _began: float = field(default_factory=time.monotonic)

    async def add_collector(
        self, name: str, extra_env: Mapping[str, str] | None = None
    ) -> CollectorProcess:
        identity = await self.broker.register(name, IdentityKind.collector)
        # The application name marks its database sessions, so a test can find them.
        url = f"{self.database_url}?application_name=chaos-{name}"
        collector = CollectorProcess(
            name, self.folder / "collectors", url, identity, self.share_group, extra_env
        )
        self.collectors.append(collector)
        return collector

    async def add_edges(
        self, n: int, extra_env: Mapping[str, str] | None = None, ack_timeout_s: float = 2.0
    ) -> list[EdgeProcess]:
        added = []
        for _ in range(n):
            edge_id = f"chaos-{uuid.uuid4().hex[:8]}"
            edge = EdgeProcess(
                edge_id,
                self.folder / edge_id,
                CountingDevice(self.scale.poll_s),
                await self.broker.register(edge_id),
                dict(extra_env or {}),
                ack_timeout_s,
            )
            self.edges.append(edge)
            added.append(edge)
        return added

    def phase(self, what: str) -> None:
        """A line of the scenario's timeline (shown with a failure, or with -s)."""
        print(f"{time.monotonic() - self._began:7.2f}s {what}", flush=True)

    async def start(self) -> None:
        """Devices, collectors and edges up, and a batch running on every line."""
        self._began = time.monotonic()
        for edge in self.edges:
            await edge.device.start()
        for collector in self.collectors:
            collector.start()
        for edge in self.edges:
            edge.start()
        await asyncio.gather(*(c.ready() for c in self.collectors))
        await asyncio.gather(*(e.ready() for e in self.edges))
        for edge in self.edges:
            self.batches[edge.edge_id] = f"B-{edge.edge_id}"
            await edge.start_batch(self.batches[edge.edge_id])
        self.phase(f"{len(self.collectors)} collectors and {len(self.edges)} edges running")

    @property
    def edge_ids(self) -> list[str]:
        return [e.edge_id for e in self.edges]

    def produced(self) -> dict[tuple[str, str], int]:
        """What every device has served so far."""
        return {(e.edge_id, DEVICE): e.device.served for e in self.edges}

    def ledgers(self) -> list[reconcile.DeviceLedger]:
        return [e.ledger() for e in self.edges]

    async def verdict(
        self, through: Mapping[tuple[str, str], int] | None = None
    ) -> reconcile.Verdict:
        async with await psycopg.AsyncConnection.connect(self.database_url, connect_timeout=3) as c:
            db = await reconcile.load(c, self.edge_ids, COUNTER if through else None)
        return reconcile.judge(self.ledgers(), db, through)

    async def until_committed(
        self, through: Mapping[tuple[str, str], int], since: float | None = None
    ) -> float:
        """Seconds until every value served through `through` is committed (or its gap
        explained by a record in the database): the recovery time, from the fault's end
        (`since`, a time.monotonic(); default now)."""
        began = time.monotonic() if since is None else since
        deadline = time.monotonic() + self.scale.recovery_timeout_s
        last = "no answer from the database"
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):
                verdict = await self.verdict(through)
                if not verdict.missing and not verdict.doubled and not verdict.phantom:
                    self.phase("all produced by the fault's end committed")
                    return time.monotonic() - began
                last = verdict.summary()
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"not all committed within {self.scale.recovery_timeout_s:.0f}s:\n{last}\n"
            + await self.where_things_stand()
        )

    async def where_things_stand(self) -> str:
        """Each process as it reports itself: what a stalled recovery is diagnosed from."""
        lines = []
        for collector in self.collectors:
            try:
                code, health = await collector.healthz()
                lines.append(f"collector {collector.name}: {code} {health.get('consumer')}")
            except Exception as err:  # a dead or hung process is the finding itself
                lines.append(f"collector {collector.name}: no answer ({err!r})")
        for edge in self.edges:
            status = await edge.status()
            if status is None:
                lines.append(f"edge {edge.edge_id}: no answer; log {edge.log}")
                continue
            device = status["devices"][DEVICE]
            lines.append(
                f"edge {edge.edge_id}: publisher {status['publisher']}, "
                f"outbox {status['outbox']['streams']} {status['outbox']['alarms']}, "
                f"device polls {device['polls']} offline since {device['offline_since']}"
            )
        return "\n".join(lines)

    async def finish(self) -> reconcile.Verdict:
        """Stop the devices (the ledgers are final), let every outbox drain, reconcile."""
        self.phase("devices stopping")
        for edge in self.edges:
            await edge.device.stop()
        deadline = time.monotonic() + self.scale.recovery_timeout_s
        pending = list(self.edges)
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            pending = [e for e in pending if not await _drained(e)]
        assert not pending, f"outboxes not drained: {[e.edge_id for e in pending]}"
        self.phase("outboxes drained")
        return await self.verdict()

    async def close(self) -> None:
        for edge in self.edges:
            edge.stop()
            with contextlib.suppress(Exception):
                await edge.device.stop()
        for collector in self.collectors:
            collector.stop()


async def _drained(edge: EdgeProcess) -> bool:
    """The agent has seen its device go (no more readings can come) and sent everything."""
    status = await edge.status()
    if status is None:
        return False
    device = status["devices"][DEVICE]
    streams = status["outbox"]["streams"].values()
    return device["offline_since"] is not None and all(s["depth"] == 0 for s in streams)


@dataclass(frozen=True)
class Recovery:
    scenario: str
    seconds: list[float]
    verdict: str


RECOVERIES: list[Recovery] = []


def record(scenario: str, seconds: list[float], verdict: reconcile.Verdict) -> None:
    """Keep a scenario's recovery times for the run's summary (and CHAOS_REPORT, a file)."""
    RECOVERIES.append(Recovery(scenario, seconds, verdict.summary().splitlines()[0]))
    print(f"\n{scenario}: recovered in {', '.join(f'{s:.1f}s' for s in seconds)}")
    if path := os.environ.get("CHAOS_REPORT"):
        with open(path, "a") as out:
            figures = " ".join(f"{s:.2f}" for s in seconds)
            out.write(f"{scenario}\t{figures}\t{RECOVERIES[-1].verdict}\n")
