"""Each folder under cases/ is a device: its tags, the registers it holds (and an optional
exception code it answers with), and the samples the edge must read from it, over TCP and
over RTU on a pseudo-terminal pair: the same case files, both wires."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pymodbus.constants import ExcCodes

from tests.protocols.modbus.wiring import TRANSPORTS, Transport, profile_for, wired

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case(case: Path, transport: Transport) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    async with wired(profile_for(transport, spec["tags"])) as (sim, driver, _):
        for table, blocks in spec["registers"].items():
            for address, registers in blocks.items():
                sim.set_registers(table, int(address), registers)
        if "fault" in spec:
            sim.fault = ExcCodes(spec["fault"])
        samples = await driver.read()
    got = [
        {
            k: v
            for k, v in (
                ("tag", s.tag),
                ("value", s.value),
                ("quality", s.quality),
                ("unit", s.unit),
                ("detail", s.detail),
            )
            if v is not None or k == "value"
        }
        for s in samples
    ]
    assert got == spec["expected"]
