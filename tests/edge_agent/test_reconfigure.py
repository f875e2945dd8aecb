"""Site versions pushed from the collector's registry to a running edge over the real broker
and database: only the changed device restarts while the others capture on with no gap,
a new tag's readings reach the database, invalid versions are refused with the reason the
technician sees through the collector, an offline edge applies the newest version when it
returns (and runs it again after a restart without a broker), and a rollback is one call."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import io
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec

import aiomqtt
import psycopg
import pytest
import yaml

from cloud_collector.auth import Role
from cloud_collector.broker_identities import IdentityKind
from device_profiles import LIBRARY
from device_profiles.schema import load_profile
from device_profiles.sites import bundle_site_file, canonical_json, content_hash
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.modbus.simulator import ModbusSimulator
from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import SitePush
from tests.cloud_collector.test_edge_status import keeper, publish
from tests.conftest import RunningCollector, Services, free_port, now_true, until

__all__ = ["keeper"]  # the collector's keeper of edge statuses, shared with its tests

P = ParamSpec("P")
PROFILE = LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml"
POLL_S = 0.2


def bounded(
    seconds: float,
) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """A test that fails after `seconds` rather than hang the suite; if it does not end when
    cancelled (a task of the agent ignoring its cancel), it fails with every task's stack."""

    def wrap(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(test)
        async def run(*args: P.args, **kwargs: P.kwargs) -> None:
            task = asyncio.ensure_future(test(*args, **kwargs))
            if not (await asyncio.wait({task}, timeout=seconds))[0]:
                task.cancel()
                if not (await asyncio.wait({task}, timeout=10))[0]:
                    stacks = io.StringIO()
                    for other in asyncio.all_tasks():
                        other.print_stack(file=stacks)
                    raise AssertionError(f"ignored its cancel:\n{stacks.getvalue()}")
                raise TimeoutError(f"the test took more than {seconds}s")
            await task

        return run

    return wrap


@pytest.fixture(scope="module")
async def pusher_identity(services: Services) -> BrokerSettings:
    return await services.register(f"provisioning-test-{os.getpid()}", IdentityKind.collector)


@pytest.fixture
def pushes(pusher_identity: BrokerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector's API pushes under its own identity (TRACE_PROVISIONING_*)."""
    monkeypatch.setenv("TRACE_PROVISIONING_USERNAME", pusher_identity.username or "")
    monkeypatch.setenv("TRACE_PROVISIONING_PASSWORD", pusher_identity.password or "")


def write_site(folder: Path, edge_id: str, port: int, devices: list[str]) -> Path:
    """A site of one line with one Modbus controller per name, polled every POLL_S."""
    refs = []
    for name in devices:
        profile = yaml.safe_load(PROFILE.read_text())
        profile |= {"name": name, "poll_interval_s": POLL_S}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(profile))
        refs.append({"profile": f"{name}.yaml", "connection": {"port": port}})
    site = folder / "site.yaml"
    site.write_text(
        yaml.safe_dump({"edge_id": edge_id, "lines": [{"id": "line-1", "devices": refs}]})
    )
    return site


@contextlib.asynccontextmanager
async def running(agent: EdgeAgent) -> AsyncIterator[EdgeAgent]:
    task = asyncio.create_task(agent.run(poll=True, control=False))
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        agent.close()


def agent_for(site: Path, state: Path, broker: BrokerSettings) -> EdgeAgent:
    settings = EdgeSettings(
        site=site, state_dir=state, mqtt=broker, publish_linger_s=0.05, status_interval_s=0.3
    )
    return EdgeAgent(settings, load_site(site))


async def reading_times(url: str, edge_id: str, device: str, tag: str) -> list[datetime]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select r.time from readings r join edge_streams s using (stream_id)"
            " where s.edge_id = %s and r.device = %s and r.tag = %s order by r.time",
            (edge_id, device, tag),
        )
        return [row[0] for row in await cur.fetchall()]


def add_tag(content: dict[str, Any], device_index: int) -> dict[str, Any]:
    new = copy.deepcopy(content)
    profile = new["lines"][0]["devices"][device_index]["profile"]
    profile["tags"].append(
        {"name": "setpoint_raw", "table": "holding", "address": 5, "data_type": "int16"}
    )
    return new


@bounded(120)
async def test_a_pushed_change_restarts_only_the_changed_device(
    tmp_path: Path,
    services: Services,
    collector: RunningCollector,
    keeper: object,
    pushes: None,
) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    port = free_port()
    site = write_site(tmp_path, edge, port, ["tpc-a", "tpc-b"])
    agent = agent_for(site, tmp_path / "state", await services.register(edge))
    url = services.database_url
    async with (
        ModbusSimulator(load_profile(PROFILE), port=port),
        running(agent),
        collector.client(Role.provisioner) as api,
    ):
        await until(
            lambda: reading_times(url, edge, "tpc-b", "temperature"), 20, "tpc-b's readings"
        )
        unchanged, unchanged_run = agent.devices["tpc-a"], agent._runs["tpc-a"]
        epoch = agent.outbox.epoch
        pushed_at = datetime.now(UTC)
        made = await api.post(
            f"/api/v1/provisioning/sites/{edge}",
            json={"content": add_tag(bundle_site_file(site), 1), "comment": "setpoint raw"},
        )
        assert made.status_code == 201, made.text
        assert made.json()["pushed"] is True, made.json()
        await until(lambda: now_true(agent.configurator.state().version == 1), 10, "v1 applied")
        new_tag = await until(
            lambda: reading_times(url, edge, "tpc-b", "setpoint_raw"), 10, "the new tag's readings"
        )
        await asyncio.sleep(1.0)  # capture on after the apply
        times = await reading_times(url, edge, "tpc-a", "temperature")

        async def reported() -> dict[str, Any] | None:
            body: dict[str, Any] = (await api.get(f"/api/v1/edges/{edge}")).json()
            config = (body.get("status") or {}).get("site_config") or {}
            return body if config.get("version") == 1 else None

        shown = await until(reported, 10, "the applied version in GET /api/v1/edges/{edge}")
        audit = (await api.get(f"/api/v1/provisioning/audit?subject=site&name={edge}")).json()

    state = agent.configurator.state()
    assert state.restarted == ["tpc-b"]
    # The unchanged device is the same task, never stopped: its capture did not pause.
    assert agent.devices["tpc-a"] is unchanged and agent._runs["tpc-a"] is unchanged_run
    around = [t for t in times if t >= pushed_at.replace(microsecond=0)]
    assert len(around) >= 5
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(around)]
    assert max(gaps) < 5 * POLL_S, gaps
    assert new_tag and agent.outbox.epoch == epoch  # the outbox was not started over
    assert shown["status"]["site_config"]["restarted"] == ["tpc-b"]
    assert [a["action"] for a in audit][:3] == ["applied", "pushed", "site_created"]
    assert "devices restarted: tpc-b" in audit[0]["detail"]


def forged_push(
    edge: str, version: int, content: dict[str, Any], sha256: str | None = None
) -> bytes:
    text = canonical_json(content)
    return (
        SitePush(
            edge_id=edge,
            version=version,
            sha256=sha256 or content_hash(text),
            author="someone",
            published_at=datetime.now(UTC),
            content=text,
        )
        .model_dump_json()
        .encode()
    )


@bounded(120)
async def test_invalid_versions_are_refused_and_the_old_one_runs_on(
    tmp_path: Path,
    services: Services,
    collector: RunningCollector,
    keeper: object,
    pushes: None,
) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    port = free_port()
    site = write_site(tmp_path, edge, port, ["tpc-a"])
    agent = agent_for(site, tmp_path / "state", await services.register(edge))
    content = bundle_site_file(site)
    async with (
        ModbusSimulator(load_profile(PROFILE), port=port),
        running(agent),
        collector.client(Role.provisioner) as api,
    ):
        device = agent.devices["tpc-a"]
        await until(lambda: now_true(device.health.readings > 0), 10, "capture")
        config = topics.config_site(edge)

        # Altered on the way: the hash does not hold.
        await publish(services.broker, config, forged_push(edge, 7, content, "0" * 64))
        await until(lambda: now_true(agent.configurator.state().refused_version == 7), 10, "v7")
        assert "SHA-256" in (agent.configurator.state().refused_reason or "")

        # Intact, but a profile the edge cannot run.
        bad = copy.deepcopy(content)
        bad["lines"][0]["devices"][0]["profile"]["tags"][0]["data_type"] = "float33"
        await publish(services.broker, config, forged_push(edge, 8, bad))
        await until(lambda: now_true(agent.configurator.state().refused_version == 8), 10, "v8")
        assert "tags[0].data_type" in (agent.configurator.state().refused_reason or "")

        # Valid, but it would remove the line that runs a batch.
        agent.binder.start_batch("line-1", f"B-{uuid.uuid4().hex[:6]}", "op-1")
        moved = copy.deepcopy(content)
        moved["lines"][0]["id"] = "line-2"
        made = await api.post(f"/api/v1/provisioning/sites/{edge}", json={"content": moved})
        assert made.json()["pushed"] is True
        await until(lambda: now_true(agent.configurator.state().refused_version == 1), 10, "v1")
        before = device.health.readings
        await asyncio.sleep(3 * POLL_S)

        async def reported() -> dict[str, Any] | None:
            body: dict[str, Any] = (await api.get(f"/api/v1/edges/{edge}")).json()
            state = (body.get("status") or {}).get("site_config") or {}
            return body if state.get("refused_version") == 1 else None

        shown = await until(reported, 10, "the refusal in GET /api/v1/edges/{edge}")
        audit = (await api.get(f"/api/v1/provisioning/audit?subject=site&name={edge}")).json()

    assert agent.devices["tpc-a"] is device and device.health.readings > before
    assert agent.site.line_ids == ["line-1"] and agent.configurator.state().version is None
    reason = shown["status"]["site_config"]["refused_reason"]
    assert "line line-1 runs batch" in reason and "end the batch" in reason
    refused = [a for a in audit if a["action"] == "refused"]
    assert (
        refused and refused[0]["version"] == 1 and "line line-1 runs batch" in refused[0]["detail"]
    )


@bounded(120)
async def test_an_offline_edge_applies_the_newest_version_and_rolls_back(
    tmp_path: Path, services: Services, collector: RunningCollector, pushes: None
) -> None:
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    port = free_port()
    site = write_site(tmp_path, edge, port, ["tpc-a"])
    broker = await services.register(edge)
    content = bundle_site_file(site)
    async with (
        ModbusSimulator(load_profile(PROFILE), port=port),
        collector.client(Role.provisioner) as api,
    ):
        # Versions 1 and 2 pushed while the edge is off: it gets the newest (retained).
        for version in (content, add_tag(content, 0)):
            made = await api.post(f"/api/v1/provisioning/sites/{edge}", json={"content": version})
            assert made.json()["pushed"] is True, made.json()
        async with running(agent_for(site, tmp_path / "state", broker)) as agent:
            await until(lambda: now_true(agent.configurator.state().version == 2), 10, "v2")
            assert "setpoint_raw" in [t.name for t in agent.site.devices["line-1"][0].tags]  # type: ignore[attr-defined]
            back = await api.post(
                f"/api/v1/provisioning/sites/{edge}/rollback", json={"version": 1}
            )
            assert back.status_code == 201 and back.json()["version"]["restores"] == 1
            await until(lambda: now_true(agent.configurator.state().version == 3), 10, "v3")
            assert agent.configurator.state().restarted == ["tpc-a"]
            tags = [t.name for t in agent.site.devices["line-1"][0].tags]  # type: ignore[attr-defined]
            assert "setpoint_raw" not in tags
            assert agent.configurator.state().kept == [3, 2]

    # Restarted with no broker to reach: it runs the version it applied last, not the file.
    nowhere = broker.model_copy(update={"port": free_port()})
    site.write_text(yaml.safe_dump({"edge_id": edge, "lines": [{"id": "line-9"}]}))
    restarted = EdgeAgent(
        EdgeSettings(site=site, state_dir=tmp_path / "state", mqtt=nowhere),
        load_site(site),
    )
    try:
        assert restarted.site.line_ids == ["line-1"]
        assert restarted.configurator.state().version == 3
        assert restarted.configurator.state().kept == [3, 2]
    finally:
        restarted.close()


@bounded(120)
async def test_only_collectors_may_publish_an_edges_configuration(services: Services) -> None:
    """The broker drops a push published under the edge's own identity (or another edge's):
    only a collector identity may write trace/v1/edges/<id>/config/#."""
    edge, other = f"edge-{uuid.uuid4().hex[:8]}", f"edge-{uuid.uuid4().hex[:8]}"
    own, foreign = await services.register(edge), await services.register(other)
    content = {"edge_id": edge, "lines": [{"id": "line-1"}]}
    await publish(services.broker, topics.config_site(edge), forged_push(edge, 2, content))
    # Published after the collector's: were they taken, one would be the retained message.
    for broker in (own, foreign):
        await publish(broker, topics.config_site(edge), forged_push(edge, 1, content))
    async with aiomqtt.Client(
        **own.client_args(),  # type: ignore[arg-type]
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(topics.config_site(edge), qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    received = SitePush.model_validate_json(message.payload)  # type: ignore[arg-type]
    assert received.version == 2  # the collector's; the edges' own were dropped


@bounded(120)
async def test_a_device_moved_to_another_line_keeps_capturing_and_its_history(
    tmp_path: Path,
    services: Services,
    collector: RunningCollector,
    keeper: object,
    pushes: None,
) -> None:
    """The push applies a move as a move: the same task goes on reading, its next readings
    are bound to the new line's batch, and the device's history shows both lines' periods."""
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    port = free_port()
    site = write_site(tmp_path, edge, port, ["tpc-a", "tpc-b"])
    data = yaml.safe_load(site.read_text())
    data["lines"].append({"id": "line-2", "devices": []})
    site.write_text(yaml.safe_dump(data))
    agent = agent_for(site, tmp_path / "state", await services.register(edge))
    url = services.database_url
    started = datetime.now(UTC)
    batch = f"B-{uuid.uuid4().hex[:6]}"
    async with (
        ModbusSimulator(load_profile(PROFILE), port=port),
        running(agent),
        collector.client(Role.provisioner) as api,
    ):
        await until(lambda: reading_times(url, edge, "tpc-b", "temperature"), 20, "line 1")
        task, run = agent.devices["tpc-b"], agent._runs["tpc-b"]
        agent.binder.start_batch("line-2", batch, "op-1")
        content = bundle_site_file(site)
        content["lines"][1]["devices"].append(content["lines"][0]["devices"].pop(1))
        made = await api.post(
            f"/api/v1/provisioning/sites/{edge}", json={"content": content, "comment": "move"}
        )
        assert made.json()["pushed"] is True, made.json()
        await until(lambda: now_true(agent.configurator.state().version == 1), 10, "v1 applied")

        async def on_line_2() -> list[Any]:
            async with await psycopg.AsyncConnection.connect(url) as conn:
                cur = await conn.execute(
                    "select r.batch_id from readings r join edge_streams s using (stream_id)"
                    " where s.edge_id = %s and r.device = 'tpc-b' and r.line_id = 'line-2'",
                    (edge,),
                )
                return await cur.fetchall()

        await until(on_line_2, 10, "tpc-b's readings at line 2")
        same_task = agent.devices["tpc-b"] is task and agent._runs["tpc-b"] is run
        await asyncio.sleep(1.0)
        async with collector.client(Role.reader) as looker:
            history = await looker.get(
                "/api/v1/devices/tpc-b/placements",
                params={
                    "edge": edge,
                    "from": started.isoformat(),
                    "to": datetime.now(UTC).isoformat(),
                },
            )
        audit = (await api.get(f"/api/v1/provisioning/audit?subject=site&name={edge}")).json()
    state = agent.configurator.state()
    assert (state.moved, state.restarted) == (["tpc-b"], [])
    assert same_task  # never stopped: a move is no restart
    assert history.status_code == 200, history.text
    periods = history.json()
    assert [(p["line_id"], p["batches"]) for p in periods] == [
        ("line-1", []),
        ("line-2", [batch]),
    ]
    # No pause across the move: the first reading at line 2 follows the last at line 1.
    gap = datetime.fromisoformat(periods[1]["first_reading"]) - datetime.fromisoformat(
        periods[0]["last_reading"]
    )
    assert gap.total_seconds() < 5 * POLL_S, gap
    assert "moved: tpc-b" in next(a for a in audit if a["action"] == "applied")["detail"]
