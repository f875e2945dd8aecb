"""Each folder under cases/ is a device: its tags, the registers it holds (and an optional
exception code it answers with), and the samples the edge must read from it over TCP."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from device_profiles.schema import ModbusTcpProfile, parse_profile
from protocols.modbus.client import ModbusDriver
from protocols.modbus.simulator import ModbusSimulator
from tests.conftest import free_port

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())


def profile_for(tags: list[dict], port: int) -> ModbusTcpProfile:
    profile = parse_profile(
        {
            "profile_version": 1,
            "name": "device-under-test",
            "protocol": "modbus_tcp",
            "connection": {"host": "127.0.0.1", "port": port, "timeout_s": 2},
            "tags": tags,
        }
    )
    assert isinstance(profile, ModbusTcpProfile)
    return profile


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_case(case: Path) -> None:
    spec = yaml.safe_load((case / "case.yaml").read_text())
    profile = profile_for(spec["tags"], free_port())
    driver = ModbusDriver(profile)
    async with ModbusSimulator(profile) as sim:
        for table, blocks in spec["registers"].items():
            for address, registers in blocks.items():
                sim.set_registers(table, int(address), registers)
        if "fault" in spec:
            from pymodbus.constants import ExcCodes

            sim.fault = ExcCodes(spec["fault"])
        await driver.open()
        try:
            samples = await driver.read()
        finally:
            await driver.close()
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
