"""Keyboard-wedge style input: scans as text lines on a FIFO, a regular file or stdin."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.driver import DeviceMisconfigured, DeviceUnavailable
from protocols.scanner.client import ScannerDriver
from tests.protocols.scanner.wiring import WAIT_S, Collector, settle, wedge_profile

FILE_POLL_S = 0.05


@contextlib.asynccontextmanager
async def streaming(driver: ScannerDriver) -> AsyncIterator[tuple[Collector, asyncio.Task[None]]]:
    await driver.open()
    got = Collector()
    task = asyncio.create_task(driver.stream(got))
    try:
        yield got, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, DeviceUnavailable):
            await task
        await driver.close()


def write_fifo(path: Path, data: bytes) -> None:
    """One writer: opens the FIFO, writes, closes, as `echo ... > fifo` does."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # the driver holds the read end open
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def test_a_fifo_is_followed_while_writers_come_and_go(tmp_path: Path) -> None:
    fifo = tmp_path / "scanner.fifo"
    os.mkfifo(fifo)
    driver = ScannerDriver(wedge_profile(str(fifo)))
    async with streaming(driver) as (got, task):
        write_fifo(fifo, b"WO-1\nOP-0042\n")
        await got.wait_for(2)
        await settle()  # the writer closed: no end of input, the driver waits for more
        assert not task.done()
        write_fifo(fifo, b"]C10109501101530003\x1d10L1\r\nunterminated")
        await got.wait_for(3)
        write_fifo(fifo, b" rest\n")
        scans = await got.wait_for(4)
    assert got.texts == ["WO-1", "OP-0042", "0109501101530003\x1d10L1", "unterminated rest"]
    assert [s.meaning for s in scans] == ["batch_start", "operator", "consume", None]
    assert scans[2].gs1.gtin == "09501101530003"


async def test_a_file_is_read_then_followed_and_resumed_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "scans.txt"
    path.write_bytes(b"WO-1\nOP-0001\n")
    driver = ScannerDriver(wedge_profile(str(path)), file_poll_s=FILE_POLL_S)
    async with streaming(driver) as (got, task):
        await got.wait_for(2)
        with path.open("ab") as f:
            f.write(b"OP-0002\nOP-00")  # the last line is still being written
        await got.wait_for(3)
        await settle()
        assert got.texts == ["WO-1", "OP-0001", "OP-0002"]
        with path.open("ab") as f:
            f.write(b"03\n")
        await got.wait_for(4)
        assert not task.done()
    with path.open("ab") as f:
        f.write(b"WO-2\n")
    async with streaming(driver) as (again, _):  # the supervisor reopens the same driver
        await again.wait_for(1)
        await settle()
    assert got.texts == ["WO-1", "OP-0001", "OP-0002", "OP-0003"]
    assert again.texts == ["WO-2"]


async def test_a_truncated_file_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "scans.txt"
    path.write_bytes(b"WO-1\nWO-2\n")
    driver = ScannerDriver(wedge_profile(str(path)), file_poll_s=FILE_POLL_S)
    async with streaming(driver) as (got, _):
        await got.wait_for(2)
        path.write_bytes(b"WO-3\n")
        await got.wait_for(3)
    assert got.texts == ["WO-1", "WO-2", "WO-3"]


async def test_a_removed_file_is_unavailable_and_a_new_one_read_from_its_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scans.txt"
    path.write_bytes(b"WO-1\n")
    driver = ScannerDriver(wedge_profile(str(path)), file_poll_s=FILE_POLL_S)
    got = Collector()
    await driver.open()
    task = asyncio.create_task(driver.stream(got))
    await got.wait_for(1)
    path.unlink()
    with pytest.raises(DeviceUnavailable, match=rf"{path} was removed"):
        await asyncio.wait_for(task, WAIT_S)
    await driver.close()
    path.write_bytes(b"WO-2\n")
    async with streaming(driver) as (again, _):
        await again.wait_for(1)
    assert (got.texts, again.texts) == (["WO-1"], ["WO-2"])


async def test_stdin_is_read_until_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        driver = ScannerDriver(wedge_profile("-"))
        await driver.open()
        got = Collector()
        task = asyncio.create_task(driver.stream(got))
        os.write(write_end, b"WO-1\nOP-0042\n")
        await got.wait_for(2)
        os.write(write_end, b"last line without terminator")
        os.close(write_end)
        with pytest.raises(
            DeviceUnavailable,
            match=r"wedge-under-test: standard input ended \(end of input\): nothing more",
        ):
            await asyncio.wait_for(task, WAIT_S)
        await driver.close()
        assert os.fstat(stdin.fileno())  # the driver leaves standard input open
    assert got.texts == ["WO-1", "OP-0042", "last line without terminator"]


async def test_stdin_redirected_from_a_file_is_read_to_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "replay.txt"
    path.write_bytes(b"WO-1\r\nOP-0042")
    with path.open("rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        driver = ScannerDriver(wedge_profile("-"))
        await driver.open()
        got = Collector()
        with pytest.raises(DeviceUnavailable, match="standard input ended"):
            await asyncio.wait_for(driver.stream(got), WAIT_S)
        await driver.close()
    assert got.texts == ["WO-1", "OP-0042"]


async def test_a_missing_path_is_misconfigured_and_says_how_to_fix_it(tmp_path: Path) -> None:
    path = tmp_path / "no.fifo"
    driver = ScannerDriver(wedge_profile(str(path)))
    with pytest.raises(
        DeviceMisconfigured,
        match=rf"wedge-under-test: connection.path {path} does not exist: create the FIFO "
        rf"\(mkfifo {path}\) or start the service that does, or fix the path",
    ):
        await driver.open()


async def test_a_directory_is_misconfigured(tmp_path: Path) -> None:
    driver = ScannerDriver(wedge_profile(str(tmp_path)))
    with pytest.raises(DeviceMisconfigured, match="is neither a FIFO nor a file"):
        await driver.open()
