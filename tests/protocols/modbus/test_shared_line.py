"""Two Modbus RTU devices on one simulated RS-485 line (one pseudo-terminal): their drivers
share the port, one request at a time, and polled concurrently each reads its own values;
a device that stops answering does not take the other down; a profile with other serial
settings than the line's is refused naming the device that runs the line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from device_profiles.schema import ModbusRtuProfile
from device_profiles.sites import SiteDocumentError, resolve_site
from edge_agent.site import SiteError, load_site
from protocols.driver import DeviceMisconfigured, DeviceUnavailable
from protocols.modbus.client import ModbusDriver
from protocols.modbus.simulator import ModbusRtuLine
from protocols.serial_link import SerialLink
from tests.protocols.modbus.test_rtu import SHORT_TIMEOUT_S
from tests.protocols.modbus.wiring import on_port, profile_for

TAGS = [
    {"name": "level", "table": "holding", "address": 0, "data_type": "uint16"},
    {"name": "flow", "table": "input", "address": 0, "data_type": "float32"},
]


def device(name: str, unit_id: int, port: str, **connection: object) -> ModbusRtuProfile:
    profile = profile_for("rtu", TAGS, unit_id=unit_id, timeout_s=SHORT_TIMEOUT_S, **connection)
    assert isinstance(profile, ModbusRtuProfile)
    return on_port(profile.model_copy(update={"name": name}), port)


async def test_two_devices_on_one_line_each_read_their_own_values() -> None:
    async with SerialLink() as link:
        meters = [device("meter-1", 1, link.edge_port), device("meter-2", 2, link.edge_port)]
        line_side = [on_port(p, link.device_port) for p in meters]
        async with ModbusRtuLine(line_side, link.device_port) as line:
            line.devices[1].set("level", 11)
            line.devices[1].set("flow", 1.5)
            line.devices[2].set("level", 22)
            line.devices[2].set("flow", 2.5)
            drivers = [ModbusDriver(p) for p in meters]
            for d in drivers:
                await d.open()
            try:

                async def poll(driver: ModbusDriver) -> list[dict[str, float | None]]:
                    return [{s.tag: s.value for s in await driver.read()} for _ in range(20)]

                first, second = await asyncio.gather(*(poll(d) for d in drivers))
            finally:
                for d in drivers:
                    await d.close()
    assert all(r == {"level": 11, "flow": 1.5} for r in first), first
    assert all(r == {"level": 22, "flow": 2.5} for r in second), second
    assert [d.garbled_replies for d in drivers] == [0, 0]


async def test_a_silent_device_leaves_the_other_reading() -> None:
    async with SerialLink() as link:
        meters = [device("meter-1", 1, link.edge_port), device("meter-2", 2, link.edge_port)]
        line_side = [on_port(p, link.device_port) for p in meters]
        async with ModbusRtuLine(line_side, link.device_port) as line:
            line.devices[1].set("level", 11)
            line.devices[2].silent = True
            one, two = (ModbusDriver(p) for p in meters)
            await one.open()
            await two.open()
            try:
                with pytest.raises(DeviceUnavailable, match="no reply from unit 2"):
                    await two.read()
                await two.close()  # as the capture loop does before it retries
                assert {s.tag: s.value for s in await one.read()}["level"] == 11
            finally:
                await one.close()


async def test_a_device_with_other_line_settings_is_refused() -> None:
    async with SerialLink() as link:
        first = ModbusDriver(device("meter-1", 1, link.edge_port))
        other = ModbusDriver(device("meter-2", 2, link.edge_port, baudrate=9600))
        await first.open()
        try:
            with pytest.raises(DeviceMisconfigured, match=r"runs at 19200 8N1 for meter-1"):
                await other.open()
        finally:
            await other.close()
            await first.close()


def test_a_site_with_a_line_at_two_settings_or_a_unit_id_twice_is_refused(
    tmp_path: Path,
) -> None:
    port = "/dev/ttyUSB0"
    profiles = [
        device("meter-1", 1, port).model_dump(mode="json"),
        device("meter-2", 2, port, baudrate=9600).model_dump(mode="json"),
        device("meter-3", 1, port).model_dump(mode="json"),
    ]
    site = {"edge_id": "e1", "lines": [{"id": "l1", "devices": [{"profile": p} for p in profiles]}]}
    with pytest.raises(SiteDocumentError) as refused:
        resolve_site(site)
    assert refused.value.problems == [
        "meter-2: port /dev/ttyUSB0 runs at 19200 8N1 for meter-1, this device asks 9600 8N1: "
        "devices on one RS-485 line use the same serial settings",
        "meter-3: unit id 1 on port /dev/ttyUSB0 is also meter-1's: give each device on a "
        "line its own unit id",
    ]
    refs = []
    for p in profiles:
        (tmp_path / f"{p['name']}.yaml").write_text(yaml.safe_dump(p))
        refs.append({"profile": f"{p['name']}.yaml"})
    (tmp_path / "site.yaml").write_text(
        yaml.safe_dump({"edge_id": "e1", "lines": [{"id": "l1", "devices": refs}]})
    )
    with pytest.raises(SiteError) as file_refused:
        load_site(tmp_path / "site.yaml")
    assert [p.split(": ", 1)[1] for p in file_refused.value.problems] == refused.value.problems
