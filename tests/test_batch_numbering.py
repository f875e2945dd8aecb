"""A line without an MES: batches started with no id get one by the line's numbering rule,
made by the edge while it is offline and across its restart, never twice; the ids reach the
database marked as made by rule; a site version that changes the rule is applied while the
edge runs, and the next batch follows it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from cloud_collector.auth import Role
from device_profiles.sites import bundle_site_file
from edge_agent.control import ControlAccess, create_control_app
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.mqtt.connection import BrokerSettings
from tests.conftest import RunningCollector, Services, free_port, now_true, until
from tests.edge_agent.test_reconfigure import pusher_identity, pushes

__all__ = ["pusher_identity", "pushes"]  # the collector's API pushes under its own identity

TOKEN = "a-test-token-of-enough-length"
RULE = {
    "pattern": "{line}-{date:%y%m%d}-{shift}{seq}",
    "time_zone": "Europe/Berlin",
    "shifts": [{"name": "A", "start": "06:00"}, {"name": "N", "start": "18:00"}],
    "sequence": {"width": 3, "reset": "shift"},
}


def write_site(folder: Path, edge_id: str) -> Path:
    site = folder / "site.yaml"
    site.write_text(
        yaml.safe_dump({"edge_id": edge_id, "lines": [{"id": "line-1", "numbering": RULE}]})
    )
    return site


@contextlib.asynccontextmanager
async def control(agent: EdgeAgent) -> AsyncIterator[httpx.AsyncClient]:
    app = create_control_app(
        agent.binder, agent.status, access=ControlAccess.of(TOKEN, "127.0.0.1", 8100)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)),
        base_url="http://127.0.0.1:8100",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client


async def one_batch(c: httpx.AsyncClient) -> str:
    """Start a batch with no id on line-1 and end it; the id the edge made."""
    started = await c.put("/api/v1/lines/line-1/batch", json={"by": "hmi-1"})
    assert started.status_code == 201, started.text
    assert (await c.delete("/api/v1/lines/line-1/batch")).status_code == 200
    return str(started.json()["batch_id"])


def agent_for(site: Path, state: Path, broker: BrokerSettings) -> EdgeAgent:
    settings = EdgeSettings(site=site, state_dir=state, mqtt=broker, publish_linger_s=0.05)
    return EdgeAgent(settings, load_site(site))


async def test_an_offline_edge_numbers_batches_by_rule_and_a_pushed_rule_applies(
    tmp_path: Path, services: Services, collector: RunningCollector, pushes: None
) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    site = write_site(tmp_path, edge)
    broker = await services.register(edge)
    nowhere = broker.model_copy(update={"port": free_port()})
    made: list[str] = []
    rule = load_site(site).numbering["line-1"]
    shift_before = rule.shift_at(datetime.now(UTC))

    # Offline: no broker to reach; two batches, a restart, one more.
    for _ in range(2):
        agent = agent_for(site, tmp_path / "state", nowhere)
        try:
            async with control(agent) as c:
                made += [await one_batch(c) for _ in range(2 if not made else 1)]
        finally:
            agent.close()
    # line-1-<production day>-<shift><seq>: within a shift the sequence counts 1, 2, 3; a
    # shift change between two starts (a slow machine at 06:00) starts it again.
    assert len(set(made)) == 3, made
    shifts: dict[str, list[int]] = {}
    for batch_id in made:
        shifts.setdefault(batch_id[:-3], []).append(int(batch_id[-3:]))
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in shifts.values()), made
    assert made[-1][:-3] in {
        f"line-1-{day:%y%m%d}-{shift}"
        for day, shift in (shift_before, rule.shift_at(datetime.now(UTC)))
    }

    # Online: the three reach the database as made by rule; a new rule is pushed.
    agent = agent_for(site, tmp_path / "state", broker)
    running = asyncio.create_task(agent.run(poll=False, control=False))
    try:
        async with (
            collector.client(Role.provisioner) as api,
            collector.client(Role.reader) as reader,
            control(agent) as c,
        ):

            async def stored() -> list[dict[str, Any]] | None:
                batches = (await reader.get("/api/v1/batches", params={"limit": 1000})).json()
                ours = [b for b in batches if b["edge_id"] == edge and b["ended_at"]]
                return ours if len(ours) == 3 else None

            batches = await until(stored, 30, "the three batches in the database")
            assert sorted(b["batch_id"] for b in batches) == sorted(made)
            assert all(b["numbered_by_rule"] and b["started_by"] == "hmi-1" for b in batches)

            content = copy.deepcopy(bundle_site_file(site))
            content["lines"][0]["numbering"] = {
                "pattern": "K-{line}-{seq}",
                "sequence": {"width": 5, "start": 100, "reset": "never"},
            }
            pushed = await api.post(f"/api/v1/provisioning/sites/{edge}", json={"content": content})
            assert pushed.status_code == 201, pushed.text
            await until(lambda: now_true(agent.configurator.state().version == 1), 20, "v1")
            assert await one_batch(c) == "K-line-1-00100"
            given = await c.put("/api/v1/lines/line-1/batch", json={"batch_id": "WO-77"})
            assert given.status_code == 201
            assert (await c.delete("/api/v1/lines/line-1/batch")).status_code == 200

            async def flags() -> dict[str, bool] | None:
                batches = (await reader.get("/api/v1/batches", params={"limit": 1000})).json()
                out = {b["batch_id"]: b["numbered_by_rule"] for b in batches}
                return out if "WO-77" in out and "K-line-1-00100" in out else None

            shown = await until(flags, 30, "the pushed rule's batch in the database")
            assert shown["K-line-1-00100"] is True and shown["WO-77"] is False
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        agent.close()
