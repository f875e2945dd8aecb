"""The walking skeleton, end to end on real services: a simulated Modbus controller ->
edge agent -> Mosquitto -> collector -> TimescaleDB -> HTTP API, with exact values."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import httpx
import psycopg
import yaml

from cloud_collector.auth import Role
from device_profiles import LIBRARY
from device_profiles.schema import load_profile
from edge_agent.control import ControlAccess, create_control_app
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.modbus.simulator import ModbusSimulator
from tests.conftest import RunningCollector, Services, free_port, now_true, until

PROFILE = LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml"


def write_site(tmp_path: Path, edge_id: str, modbus_port: int) -> Path:
    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "edge_id": edge_id,
                "lines": [
                    {
                        "id": "line-1",
                        "devices": [{"profile": str(PROFILE), "connection": {"port": modbus_port}}],
                    }
                ],
            }
        )
    )
    return site


async def test_readings_travel_from_plc_to_api_bound_to_their_batch(
    tmp_path: Path, services: Services, collector: RunningCollector
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    batch_id = f"B-{uuid.uuid4().hex[:8]}"
    port = free_port()
    sim = ModbusSimulator(load_profile(PROFILE), port=port)
    settings = EdgeSettings(
        state_dir=tmp_path / "state", mqtt=await services.register(edge_id), publish_linger_s=0.05
    )
    agent = EdgeAgent(settings, load_site(write_site(tmp_path, edge_id, port)))
    device = agent.devices["tp-controller-1"]
    token = uuid.uuid4().hex
    access = ControlAccess.of(token, "127.0.0.1", 8100)
    control = httpx.AsyncClient(
        transport=httpx.ASGITransport(
            app=create_control_app(agent.binder, agent.status, access=access)
        ),
        base_url="http://127.0.0.1:8100",
        headers={"Authorization": f"Bearer {token}"},
    )
    async with sim, control, collector.client(Role.reader) as api:
        running = asyncio.create_task(agent.run(poll=False, control=False))
        try:
            await device.connect()
            r = await control.put(
                "/api/v1/lines/line-1/batch", json={"batch_id": batch_id, "by": "op-7"}
            )
            assert r.status_code == 201, r.text
            for temperature, pressure, speed, setpoint in [
                (70.0, 2.0, 100.0, 75.0),
                (72.5, 2.5, 110.0, 75.0),
                (75.0, 3.75, 120.0, 80.0),  # 3.75 bar: above the profile's 3.5
            ]:
                sim.set("temperature", temperature)
                sim.set("pressure", pressure)
                sim.set("agitator_speed", speed)
                sim.set("setpoint", setpoint)
                assert await device.poll_once() == 4
            r = await control.delete("/api/v1/lines/line-1/batch", params={"by": "op-7"})
            assert r.status_code == 200, r.text
            sim.set("temperature", 99.0)  # after the batch: bound to no batch
            await device.poll_once()

            async def batch_complete() -> dict | None:
                r = await api.get(f"/api/v1/batches/{batch_id}/parameters")
                if r.status_code != 200:
                    return None
                body = r.json()
                # Percentiles computed while the last message was committing are left out
                # (stale) rather than shown; the next read computes them.
                done = body["batch"]["ended_at"] and all(
                    t["count"] == 3 and t["p50"] is not None for t in body["tags"]
                )
                return body if done and len(body["tags"]) == 4 else None

            body = await until(batch_complete, 20, "the batch complete in the API")
            # Every record was acknowledged and left the outbox.
            await until(lambda: now_true(agent.outbox.stats().depth == 0), 20, "the outbox drained")
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await device.driver.close()
            agent.close()

    batch = body["batch"]
    assert (batch["batch_id"], batch["line_id"], batch["edge_id"]) == (batch_id, "line-1", edge_id)
    assert batch["started_by"] == "op-7" and batch["ended_by"] == "op-7"
    assert batch["started_at"] < batch["ended_at"]
    tags = {t["tag"]: t for t in body["tags"]}
    expected = {
        "temperature": ("Cel", 70.0, 75.0, 72.5),
        "pressure": ("bar", 2.0, 3.75, 2.75),
        "agitator_speed": ("1/min", 100.0, 120.0, 110.0),
        "setpoint": ("Cel", 75.0, 80.0, 230.0 / 3),
    }
    for tag, (unit, low, high, mean) in expected.items():
        t = tags[tag]
        assert t["device"] == "tp-controller-1"
        assert (t["unit"], t["count"], t["good_count"], t["bad_count"]) == (unit, 3, 3, 0)
        assert (t["min"], t["max"]) == (low, high)
        assert abs(t["mean"] - mean) < 1e-9
        assert batch["started_at"] <= t["first_time"] < t["last_time"] <= batch["ended_at"]
    assert body["gaps"] == []
    # The edge told the collector its spec limits: the pressure excursion is flagged.
    [excursion] = body["excursions"]
    assert (excursion["tag"], excursion["high"], excursion["above"], excursion["max"]) == (
        "pressure",
        3.5,
        1,
        3.75,
    )
    series = {s["tag"]: s["points"] for s in body["series"]}
    assert sum(p["count"] for p in series["temperature"]) == 3
    assert tags["temperature"]["p50"] == 72.5

    # The reading taken after the batch ended is stored, explicitly bound to no batch.
    with psycopg.connect(services.database_url) as conn:
        rows = conn.execute(
            "select r.tag, r.value, r.batch_id from readings r"
            " join edge_streams s using (stream_id)"
            " where s.edge_id = %s and r.batch_id is null and r.tag = 'temperature'",
            (edge_id,),
        ).fetchall()
    assert rows == [("temperature", 99.0, None)]
