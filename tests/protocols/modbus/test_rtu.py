"""Modbus RTU on the wire: a simulated device on one end of a pseudo-terminal pair, the
driver on the other, real frames and CRCs in between, and a line that misbehaves on demand.
(The register cases in cases/ run over RTU too: see test_cases.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from device_profiles import LIBRARY
from device_profiles.schema import ModbusRtuProfile, load_profile
from protocols.driver import DeviceUnavailable, Sample
from protocols.modbus.client import ModbusDriver
from protocols.modbus.simulator import ModbusRtuSimulator
from protocols.serial_link import SerialLink
from tests.protocols.modbus.wiring import on_port, profile_for, wired

# Tests that must wait out a timeout use a short one; replies over a pty take about a
# millisecond, so even a loaded machine answers well inside it.
SHORT_TIMEOUT_S = 1.0
# Two blocks (holding, then input) so one poll shows a failed block beside a good one.
TAGS = [
    {"name": "level", "table": "holding", "address": 0, "data_type": "uint16"},
    {"name": "flow", "table": "input", "address": 0, "data_type": "float32"},
]


def good(samples: list[Sample]) -> dict[str, float | None]:
    assert all(s.quality == "good" for s in samples), samples
    return {s.tag: s.value for s in samples}


def rtu_profile(**connection: object) -> ModbusRtuProfile:
    profile = profile_for("rtu", TAGS, timeout_s=SHORT_TIMEOUT_S, **connection)
    assert isinstance(profile, ModbusRtuProfile)
    return profile


async def test_the_shipped_flowmeter_profile_reads_over_rtu() -> None:
    shipped = load_profile(LIBRARY / "modbus-rtu-flowmeter.yaml")
    assert isinstance(shipped, ModbusRtuProfile)
    assert shipped.connection.parity == "E"
    # A pseudo-terminal refuses parity on recent kernels and moves bytes, not bits, anyway.
    profile = shipped.model_copy(
        update={"connection": shipped.connection.model_copy(update={"parity": "N"})}
    )
    async with wired(profile) as (sim, driver, _):
        sim.set("flow_rate", 12.5)
        sim.set("fluid_temperature", 18.25)
        sim.set("totaliser", 123456.789)
        # The meter holds the float low word first (CDAB) and the totaliser in litres.
        assert sim.registers[4][:6] == [0x0000, 0x4148, 0x0000, 0x4192, 1883, 52501]
        samples = await driver.read()
    assert good(samples) == pytest.approx(
        {"flow_rate": 12.5, "fluid_temperature": 18.25, "totaliser": 123456.789}
    )
    assert [s.unit for s in samples] == ["m3/h", "Cel", "m3"]


async def test_a_device_that_stops_answering_is_unavailable_within_the_timeout() -> None:
    async with wired(rtu_profile()) as (sim, driver, _):
        sim.set("level", 7)
        sim.silent = True
        started = time.monotonic()
        with pytest.raises(
            DeviceUnavailable,
            match=r"no reply from unit 1 on /dev/pts/\d+ within 1 s reading holding "
            r"registers 0\.\.0: check connection\.unit_id, the A/B wiring, that the device "
            r"is set to 19200 8N1 and is powered",
        ):
            await driver.read()
        waited = time.monotonic() - started
        # It waited for the reply, and not much longer (bounded generously for a busy host).
        assert SHORT_TIMEOUT_S * 0.9 <= waited < SHORT_TIMEOUT_S + 5
        sim.silent = False
        assert good(await driver.read()) == {"level": 7.0, "flow": 0.0}


async def test_a_device_restarted_on_its_port_is_read_again() -> None:
    async with wired(rtu_profile()) as (sim, driver, _):
        await sim.stop()  # powered off: its end of the line is closed
        with pytest.raises(DeviceUnavailable, match="no reply from unit 1"):
            await driver.read()
        await sim.start()
        sim.set("level", 3)
        assert good(await driver.read()) == {"level": 3.0, "flow": 0.0}


async def test_a_reply_garbled_on_the_line_is_a_bad_reading_and_the_next_poll_succeeds() -> None:
    async with wired(rtu_profile()) as (sim, driver, link):
        assert link is not None
        sim.set("level", 5)
        sim.set("flow", 2.5)
        link.corrupt_next(toward="edge")  # hits the first reply: the holding block's
        level, flow = await driver.read()
        assert level.quality == "bad" and level.value is None
        assert level.detail == (
            "garbled reply (7 bytes failed the RTU CRC check) reading holding registers "
            "0..0: check the RS-485 wiring, termination and shield"
        )
        assert (flow.quality, flow.value) == ("good", 2.5)  # the other block still counts
        assert (driver.garbled_replies, link.corrupted) == (1, 1)
        assert good(await driver.read()) == {"level": 5.0, "flow": 2.5}
        assert driver.garbled_replies == 1


async def test_a_request_garbled_on_the_line_gets_no_reply_and_the_next_poll_succeeds() -> None:
    async with wired(rtu_profile()) as (sim, driver, link):
        assert link is not None
        sim.set("level", 9)
        link.corrupt_next(toward="device")  # the device drops a request that fails its CRC
        with pytest.raises(DeviceUnavailable, match="no reply from unit 1"):
            await driver.read()
        assert link.corrupted == 1
        assert good(await driver.read()) == {"level": 9.0, "flow": 0.0}


async def test_noise_on_an_idle_line_does_not_disturb_the_next_poll() -> None:
    # Noise waits in each end's buffer until the next frame arrives behind it; pymodbus's
    # framer then hunts for the frame start. Unit 100 is no function code, so the last noise
    # byte and the unit id cannot pass for a frame start (with unit 1, "00 01" reads as a
    # function-1 frame that fails its CRC and takes the real frame with it).
    async with wired(rtu_profile(unit_id=100)) as (sim, driver, link):
        assert link is not None
        sim.set("level", 11)
        link.inject(b"\x00" * 8, toward="edge")
        link.inject(b"\x00" * 8, toward="device")
        await asyncio.sleep(0.1)
        assert good(await driver.read()) == {"level": 11.0, "flow": 0.0}
        assert (link.injected, driver.garbled_replies) == (16, 0)


async def test_a_wrong_unit_id_gets_no_reply() -> None:
    # On RS-485 a device answers only its own address: the symptom is silence.
    edge, device = rtu_profile(unit_id=2), rtu_profile(unit_id=1)
    async with wired(edge, device_profile=device) as (_, driver, _):
        with pytest.raises(
            DeviceUnavailable, match=r"no reply from unit 2 on .*: check connection\.unit_id"
        ):
            await driver.read()


async def test_a_missing_serial_port_names_where_to_look() -> None:
    driver = ModbusDriver(on_port(rtu_profile(), "/dev/ttyUSB-not-plugged-in"))
    with pytest.raises(
        DeviceUnavailable,
        match=r"device-under-test: cannot connect to /dev/ttyUSB-not-plugged-in: check that "
        r"the path exists \(ls /dev/serial/by-id/\), the adapter is plugged in and no other "
        r"program \(or other profile on this edge\) has the port open",
    ):
        await driver.open()
    await driver.close()


async def test_the_link_survives_the_driver_reconnecting() -> None:
    profile = rtu_profile()
    async with SerialLink() as link, ModbusRtuSimulator(profile, port=link.device_port) as sim:
        sim.set("level", 4)
        driver = ModbusDriver(on_port(profile, link.edge_port))
        for _ in range(3):  # what the edge's supervisor does after DeviceUnavailable
            await driver.open()
            assert good(await driver.read()) == {"level": 4.0, "flow": 0.0}
            await driver.close()
        assert link.dropped == {"device": 0, "edge": 0}
