"""The edge's status as it publishes it: each line's batch and each device's state and last
values, always publishable (the contract's bounds hold whatever a device said)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cloud_collector.edge_status import parse_status
from edge_agent.runtime import EdgeAgent
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from protocols.driver import Sample
from protocols.mqtt import topics
from tests.conftest import free_port
from tests.test_end_to_end import write_site


def test_the_status_carries_lines_devices_and_values_within_the_contract(
    tmp_path: Path,
) -> None:
    site = load_site(write_site(tmp_path, "edge-7", free_port()))
    agent = EdgeAgent(EdgeSettings(state_dir=tmp_path / "state"), site)
    try:
        agent.binder.start_batch("line-1", "WO-9", "op-1")
        task = agent.devices["tp-controller-1"]
        now = datetime.now(UTC)
        task.last_values = {
            "temperature": (Sample("temperature", 71.5, "Cel"), now),
            "pressure": (Sample("pressure", float("nan"), "bar"), now),
            "odd": (Sample("odd", 1.0, "u" * 40), now),  # a unit the contract refuses
        }
        task.health.last_error = "timeout\x00" + "x" * 5000
        status = agent.edge_status()
    finally:
        agent.close()
    assert [(line.line, line.batch) for line in status.lines] == [("line-1", "WO-9")]
    (device,) = status.devices
    assert device.device == "tp-controller-1" and device.station == "line-1"
    values = {v.tag: v for v in device.values}
    assert values["temperature"].value == 71.5 and values["temperature"].quality == "good"
    assert values["pressure"].value is None and values["pressure"].quality == "bad"
    assert "odd" not in values
    assert device.last_error is not None and len(device.last_error) == 2000
    assert "\x00" not in device.last_error
    # What the collector reads of it is what was built.
    payload = status.model_dump_json(exclude_none=True).encode()
    assert parse_status(topics.status("edge-7"), payload, 1 << 20) == status
