"""Each folder under cases/ is a PLC state: the tags of a profile, the values (status codes,
timestamps) the simulator holds, and the samples the edge must get from it over opc.tcp.
Every case is run twice: polled (one Read of all tags) and subscribed (the initial values a
subscription delivers), which must agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from protocols.driver import Sample
from protocols.opcua.client import OpcUaDriver
from protocols.opcua.simulator import ReactorSimulator
from tests.protocols.opcua.helpers import as_record, parse_time, profile_for, subscribed

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())


async def apply(sim: ReactorSimulator, settings: list[dict[str, Any]]) -> None:
    for item in settings:
        times = {k: parse_time(item[k]) for k in ("source_time", "server_time") if k in item}
        await sim.set(item["variable"], item["value"], status=item.get("status", "Good"), **times)


async def initial_values(driver: OpcUaDriver) -> list[Sample]:
    names = [t.name for t in driver.tags]
    async with subscribed(driver) as recorder:
        await recorder.wait_for(
            lambda: {s.tag for s in recorder.samples} >= set(names), "every tag's initial value"
        )
        first = {}
        for sample in recorder.samples:
            first.setdefault(sample.tag, sample)
    return [first[name] for name in names]


@pytest.mark.parametrize("mode", ["poll", "subscription"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case(case: Path, mode: str, reactor: ReactorSimulator) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text(encoding="utf-8"))
    await apply(reactor, spec["set"])
    extra = {"batch_source": {"tag": spec["batch_source"]}} if "batch_source" in spec else {}
    driver = OpcUaDriver(profile_for(reactor.endpoint, spec["tags"], **extra))
    await driver.open()
    try:
        samples = await driver.read() if mode == "poll" else await initial_values(driver)
    finally:
        await driver.close()
    expected = [
        item | ({"device_time": parse_time(item["device_time"])} if "device_time" in item else {})
        for item in spec["expected"]
    ]
    assert [as_record(s) for s in samples] == expected
