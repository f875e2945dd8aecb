"""Scanners on the wire: the simulator on one end of a pseudo-terminal pair, the driver on
the other, reading through pyserial exactly as from /dev/ttyUSB0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC

import pytest

from protocols.driver import DeviceMisconfigured, DeviceUnavailable, StreamingDriver
from protocols.scanner.client import ScannerDriver
from protocols.scanner.framing import Terminator
from protocols.scanner.simulator import ScannerSimulator
from protocols.serial_link import SerialLink
from tests.protocols.scanner.wiring import WAIT_S, Collector, serial_profile, settle

GOOD = [
    ("]C0", "WO-12345"),
    ("]C1", "0109501101530003\x1d10RM-117\x1d17260200"),
    ("]C0", "OP-0042"),
    ("]d2", "0109501101530003\x1d10RM-118"),
    ("]C1", "00376104250021234569"),
    (None, "(01)09501101530003(10)RM-119"),
    ("]Q1", "https://id.gs1.org/01/09501101530003/10/RM-120"),
    (None, "hello"),
]


@contextlib.asynccontextmanager
async def streaming(
    terminator: Terminator = "\r", scanner_terminator: Terminator | None = None
) -> AsyncIterator[tuple[SerialLink, ScannerSimulator, ScannerDriver, Collector]]:
    """A link, a scanner on its device end and a driver streaming from its edge end."""
    async with SerialLink() as link:
        sim = ScannerSimulator(link.device_port, scanner_terminator or terminator)
        async with sim:
            driver = ScannerDriver(serial_profile(link.edge_port, terminator))
            await driver.open()
            got = Collector()
            task = asyncio.create_task(driver.stream(got))
            try:
                yield link, sim, driver, got
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, DeviceUnavailable):
                    await task
                await driver.close()


async def test_a_burst_with_noise_in_between_delivers_every_good_scan() -> None:
    async with streaming() as (link, sim, driver, got):
        # A scanner with AIM identifiers on prefixes each scan with its barcode's symbology.
        await sim.burst([(s or "") + t for s, t in GOOD[:2]])
        await sim.noise()
        for symbology, text in GOOD[2:5]:
            await sim.scan(text, symbology or "")
        link.inject(b"\x00\x13\x17\x9b\r")  # interference on the cable itself
        await sim.burst([(s or "") + t for s, t in GOOD[5:]])
        await sim.noise(b"\x07\x07", terminated=True)
        scans = await got.wait_for(len(GOOD))
        await settle()
    assert got.texts == [t for _, t in GOOD]
    assert [s.symbology for s in scans] == [s for s, _ in GOOD]
    assert [s.meaning for s in scans] == [
        "batch_start",
        "consume",
        "operator",
        "consume",
        "receive",
        "consume",
        "consume",
        None,
    ]
    assert [s.gs1.lot for s in scans if s.meaning == "consume"] == [
        "RM-117",
        "RM-118",
        "RM-119",
        "RM-120",
    ]
    assert scans[4].gs1.sscc == "376104250021234569"
    assert all(s.time.tzinfo is UTC for s in scans)
    assert (driver.garbage, driver.scans, sim.noise_sent) == (3, len(GOOD), 2)


async def test_a_burst_arrives_in_order_however_the_kernel_splits_it() -> None:
    texts = [f"WO-{n:05d}" for n in range(300)]  # ~3 kB: more than one read
    async with streaming() as (_, sim, _driver, got):
        await sim.burst(texts)
        await got.wait_for(len(texts))
    assert got.texts == texts


async def test_crlf_from_a_scanner_set_to_cr_is_accepted() -> None:
    async with streaming("\r", scanner_terminator="\r\n") as (_, sim, driver, got):
        await sim.burst(["WO-1", "OP-0001"])
        await sim.scan("0109501101530003\x1d10L", "]C1")
        await got.wait_for(3)
        await settle()
    assert got.texts == ["WO-1", "OP-0001", "0109501101530003\x1d10L"]
    assert driver.garbage == 0


async def test_a_terminator_that_does_not_match_shows_as_garbage_not_scans() -> None:
    async with SerialLink() as link, ScannerSimulator(link.device_port, "\n") as sim:
        driver = ScannerDriver(serial_profile(link.edge_port, "\r"), max_length=64)
        await driver.open()
        got = Collector()
        task = asyncio.create_task(driver.stream(got))
        await sim.burst([f"WO-{n}" for n in range(40)])
        await sim.send(b"\r")
        for _ in range(int(WAIT_S / 0.01)):
            if driver.garbage:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
    assert (got.texts, driver.garbage) == ([], 1)


async def test_the_port_disappearing_is_unavailable() -> None:
    async with SerialLink() as link, ScannerSimulator(link.device_port) as sim:
        driver = ScannerDriver(serial_profile(link.edge_port))
        assert isinstance(driver, StreamingDriver)
        await driver.open()
        got = Collector()
        task = asyncio.create_task(driver.stream(got))
        await sim.scan("WO-1")
        await got.wait_for(1)
        sim.stop()
        link.close()  # the USB adapter pulled: the edge's end hangs up
        with pytest.raises(
            DeviceUnavailable,
            match=rf"scanner-under-test: serial port {link.edge_port} is gone \(.*\): check the "
            r"cable and that the scanner is plugged in; the edge reopens it",
        ):
            await asyncio.wait_for(task, WAIT_S)
        await driver.close()
    with pytest.raises(DeviceUnavailable, match="check that the path exists"):
        await driver.open()  # what the supervisor's reopen meets while it is unplugged
    assert got.texts == ["WO-1"]


async def test_the_link_survives_the_driver_reopening() -> None:
    async with SerialLink() as link, ScannerSimulator(link.device_port) as sim:
        driver = ScannerDriver(serial_profile(link.edge_port))
        got = Collector()
        for n in range(3):  # what the edge's supervisor does after DeviceUnavailable
            await driver.open()
            task = asyncio.create_task(driver.stream(got))
            await asyncio.sleep(0)
            await sim.scan(f"WO-{n}")
            await got.wait_for(n + 1)
            await driver.close()
            with pytest.raises(DeviceUnavailable, match="closed while streaming"):
                await asyncio.wait_for(task, WAIT_S)
    assert got.texts == ["WO-0", "WO-1", "WO-2"]


async def test_a_port_held_by_another_program_is_unavailable() -> None:
    async with SerialLink() as link:
        first = ScannerDriver(serial_profile(link.edge_port))
        second = ScannerDriver(serial_profile(link.edge_port))
        await first.open()
        try:
            with pytest.raises(DeviceUnavailable, match="no other program"):
                await second.open()
        finally:
            await first.close()
        await second.open()  # free again
        await second.close()


async def test_a_missing_port_is_unavailable_and_names_where_to_look() -> None:
    driver = ScannerDriver(serial_profile("/dev/ttyUSB-not-plugged-in"))
    with pytest.raises(
        DeviceUnavailable,
        match=r"scanner-under-test: cannot open /dev/ttyUSB-not-plugged-in \(.*\): check that "
        r"the path exists \(ls /dev/serial/by-id/\), the scanner is plugged in",
    ):
        await driver.open()


@pytest.mark.parametrize("port", ["/dev/null", "/tmp"])
async def test_a_port_that_is_no_serial_port_is_misconfigured(port: str) -> None:
    driver = ScannerDriver(serial_profile(port))
    with pytest.raises(
        DeviceMisconfigured,
        match=rf"scanner-under-test: cannot open {port}|"
        rf"scanner-under-test: {port} is not a serial port",
    ):
        await driver.open()


async def test_stream_before_open_says_so() -> None:
    driver = ScannerDriver(serial_profile("/dev/ttyUSB0"))
    with pytest.raises(DeviceUnavailable, match=r"not open: call open\(\) first"):
        await driver.stream(Collector())


async def test_a_reopen_before_the_old_stream_has_ended_keeps_the_new_stream() -> None:
    async with SerialLink() as link, ScannerSimulator(link.device_port) as sim:
        driver = ScannerDriver(serial_profile(link.edge_port))
        await driver.open()
        old = asyncio.create_task(driver.stream(Collector()))
        await asyncio.sleep(0)
        await driver.close()
        await driver.open()  # most likely the same fd number as before
        got = Collector()
        new = asyncio.create_task(driver.stream(got))
        with pytest.raises(DeviceUnavailable, match="closed while streaming"):
            await asyncio.wait_for(old, WAIT_S)
        await sim.scan("WO-1")
        await got.wait_for(1)
        new.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await new
        await driver.close()
