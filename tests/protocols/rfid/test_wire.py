"""The driver on one end of a pseudo-terminal pair, the reader simulator on the other:
real frames and CRCs at hundreds of reads per second, a line that misbehaves, a port that
goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from device_profiles import LIBRARY
from device_profiles.schema import RfidReaderProfile, load_profile, parse_profile
from protocols.driver import DeviceMisconfigured, DeviceUnavailable, StreamingDriver
from protocols.rfid.client import RfidReaderDriver
from protocols.rfid.gate import Gate
from protocols.rfid.records import TagRead, TagRecord
from protocols.rfid.simulator import RfidReaderSimulator
from protocols.serial_link import SerialLink

# Generous for a loaded 2-core machine; tests that pass return long before.
WAIT_S = 20.0
GATE = [
    {"port": 1, "read_point": "dock-3", "side": "outside"},
    {"port": 2, "read_point": "dock-3", "side": "inside"},
]


def profile(framing: str = "mercury", **connection: Any) -> RfidReaderProfile:
    p = parse_profile(
        {
            "profile_version": 1,
            "name": "dock-3-gate",
            "protocol": "rfid_serial",
            "connection": {"port": "/dev/null", **connection},
            "framing": framing,
            "antennas": GATE,
            "window_s": 2.0,
        }
    )
    assert isinstance(p, RfidReaderProfile)
    return p


def on_port(p: RfidReaderProfile, port: str) -> RfidReaderProfile:
    return p.model_copy(update={"connection": p.connection.model_copy(update={"port": port})})


def epcs(count: int) -> list[bytes]:
    # SGTIN-96s of one product with serials 1..count.
    return [bytes.fromhex("3074257BF7194E40") + n.to_bytes(4, "big") for n in range(1, count + 1)]


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)


@asynccontextmanager
async def streaming(
    p: RfidReaderProfile, **sim: Any
) -> AsyncIterator[
    tuple[RfidReaderSimulator, RfidReaderDriver, SerialLink, list[TagRead], asyncio.Task[None]]
]:
    async with (
        SerialLink() as link,
        RfidReaderSimulator(p.framing, link.device_port, **sim) as reader,
    ):
        driver = RfidReaderDriver(on_port(p, link.edge_port))
        await driver.open()
        got: list[TagRead] = []
        task = asyncio.create_task(driver.stream(got.extend))
        try:
            yield reader, driver, link, got, task
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await driver.close()


def damaged_stretches(count: int, corrupt_every: int, noise_every: int) -> int:
    """How many damaged stretches a burst holds: a corrupt report and noise right after
    it (or after each other, with no good report between) are one stretch."""
    stretches, previous_good = 0, True
    for i in range(1, count + 1):
        corrupt = i % corrupt_every == 0
        if corrupt and previous_good:
            stretches += 1
        previous_good = not corrupt
        if i % noise_every == 0:
            if previous_good:
                stretches += 1
            previous_good = False
    return stretches


def test_the_driver_is_a_streaming_driver() -> None:
    assert isinstance(RfidReaderDriver(profile()), StreamingDriver)


@pytest.mark.parametrize("framing", ["mercury", "ascii"])
async def test_a_burst_with_corrupt_frames_and_noise_delivers_every_good_read(framing: str) -> None:
    count, corrupt_every, noise_every = 600, 23, 37
    async with streaming(profile(framing)) as (reader, driver, link, got, task):
        await reader.wait_started()
        records = [TagRecord(e, 1 + i % 2, -40 - i % 30) for i, e in enumerate(epcs(count))]
        sent = await reader.burst(
            records, reads_per_s=600, corrupt_every=corrupt_every, noise_every=noise_every
        )
        await until(lambda: len(got) >= sent.good - sent.noise_bursts, "the good reads")
        await asyncio.sleep(3 * driver.idle_s)  # whatever is still coming, comes now
        assert not task.done()
    assert sent.corrupt == count // corrupt_every and sent.noise_bursts == count // noise_every
    good = [r for i, r in enumerate(records, start=1) if i % corrupt_every]
    if framing == "ascii":
        # Noise has no line end: it is glued to the next line, which is lost with it.
        after_noise = {i + 1 for i in range(1, count + 1) if i % noise_every == 0}
        good = [
            r for i, r in enumerate(records, start=1) if i % corrupt_every and i not in after_noise
        ]
    assert [(r.epc_hex, r.antenna, r.rssi_dbm) for r in got] == [
        (r.epc_hex, r.antenna, float(r.rssi_dbm or 0)) for r in good
    ]
    assert all(r.time.tzinfo is not None and r.time.utcoffset().total_seconds() == 0 for r in got)
    if framing == "mercury":
        assert driver.counters.bad_frames == damaged_stretches(count, corrupt_every, noise_every)
    else:  # each corrupt line, and each noise burst with the line it is glued to
        merged = sum(1 for i in after_noise if i % corrupt_every == 0)
        assert driver.counters.bad_frames == sent.corrupt + sent.noise_bursts - merged
    assert driver.counters.records == len(good) == driver.reads_delivered
    assert driver.counters.bytes_discarded > 0
    assert link.dropped == {"device": 0, "edge": 0}


async def test_a_pallet_through_the_shipped_gate_profile_is_one_inbound_observation() -> None:
    shipped = load_profile(LIBRARY / "rfid-dock-door-gate.yaml")
    assert isinstance(shipped, RfidReaderProfile) and shipped.framing == "mercury"
    outside = next(a.port for a in shipped.antennas if a.side == "outside")
    inside = next(a.port for a in shipped.antennas if a.side == "inside")
    epc = bytes.fromhex("3114257BF4499602D2000000")  # the pallet's SSCC
    async with streaming(shipped) as (reader, _, _, got, _):
        await reader.wait_started()
        sent = await reader.pass_pallet(
            epc, outside_port=outside, inside_port=inside, duration_s=1.0, reads_per_s=60
        )
        await until(lambda: len(got) >= sent, "the pallet's reads")
    gate = Gate(shipped)
    assert gate.add(got) == []
    (observation,) = gate.flush(got[-1].time + gate.window)
    assert observation.direction == "in"
    assert observation.antennas == (outside, inside)
    assert observation.count == sent
    assert observation.best_rssi_dbm == -45


async def test_the_mercury_reader_is_started_on_open_and_stopped_on_close() -> None:
    async with streaming(profile()) as (reader, driver, _, _, _):
        await reader.wait_started()
        assert reader.streaming
        await driver.close()
        await until(lambda: not reader.streaming, "the stop command")
    assert [f.data[2] for f in reader.commands] == [0x01, 0x02]


async def test_a_port_that_disappears_is_unavailable() -> None:
    async with streaming(profile()) as (reader, _, link, got, task):
        await reader.wait_started()
        await reader.send(TagRecord(epcs(1)[0], 1, -50))
        await until(lambda: len(got) == 1, "the first read")
        link.close()  # the USB adapter is pulled
        with pytest.raises(DeviceUnavailable, match=r"dock-3-gate: /dev/pts/\d+ .*unplugged"):
            async with asyncio.timeout(WAIT_S):
                await task


async def test_a_reader_that_refuses_to_start_is_misconfigured() -> None:
    async with streaming(profile(), refuse_start_status=0x0105) as (_, _, _, _, task):
        with pytest.raises(
            DeviceMisconfigured, match=r"refused to start continuous reading \(status 0x0105\)"
        ):
            async with asyncio.timeout(WAIT_S):
                await task


async def test_a_missing_port_names_where_to_look() -> None:
    driver = RfidReaderDriver(on_port(profile(), "/dev/ttyUSB-not-plugged-in"))
    with pytest.raises(DeviceUnavailable, match=r"cannot open /dev/ttyUSB-not-plugged-in .*by-id"):
        await driver.open()


async def test_a_port_that_refuses_the_settings_is_misconfigured() -> None:
    # /dev/null opens but takes no serial settings, as a wrong path or an adapter that
    # refuses a baud rate does: retrying will not help, the profile must change.
    driver = RfidReaderDriver(on_port(profile(), "/dev/null"))
    with pytest.raises(
        DeviceMisconfigured, match=r"serial port /dev/null refuses 115200 8N1 .*connection\.port"
    ):
        await driver.open()


async def test_reopening_after_a_lost_port_reads_again() -> None:
    p = profile()
    async with SerialLink() as link, RfidReaderSimulator("mercury", link.device_port) as reader:
        driver = RfidReaderDriver(on_port(p, link.edge_port))
        for round_ in range(3):  # what the edge's supervisor does after DeviceUnavailable
            got: list[TagRead] = []
            await driver.open()
            task = asyncio.create_task(driver.stream(got.extend))
            await reader.wait_started()
            await reader.send(TagRecord(epcs(3)[round_], 1, -50))
            await until(lambda got=got: len(got) == 1, "a read")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await driver.close()
            await until(lambda: not reader.streaming, "the stop command")
        assert driver.opened == 3 and driver.reads_delivered == 3
