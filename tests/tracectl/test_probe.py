"""`tracectl profile probe FILE` against the in-process simulators: a Modbus controller whose
profile has the word order wrong (the raw registers, the absurd value out of spec and the
right order's value within spec side by side), an OPC UA PLC (the node's type, value and
status), an RFID reader on a pseudo-terminal (a few seconds of reads), a scanner (waits for
one scan), and a device that does not answer (one line, exit 1)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_collector.auth import Role
from device_profiles import LIBRARY
from device_profiles.schema import load_profile
from protocols.modbus.simulator import ModbusSimulator
from protocols.opcua.simulator import ReactorSimulator
from protocols.rfid.simulator import RfidReaderSimulator
from protocols.scanner.simulator import ScannerSimulator
from protocols.serial_link import SerialLink
from tests.conftest import RunningCollector, free_port
from tests.tracectl.test_collector_commands import Run

MODBUS = LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml"


@pytest.fixture
def tracectl(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys)


def write(folder: Path, source: Path, **changes: Any) -> Path:
    data = yaml.safe_load(source.read_text()) | changes
    path = folder / source.name
    path.write_text(yaml.safe_dump(data))
    return path


def row(out: str, tag: str) -> list[str]:
    line = next(x for x in out.splitlines() if x.split()[:1] == [tag])
    return line.split()


async def test_a_word_order_mistake_is_plain(tmp_path: Path, tracectl: Run) -> None:
    port = free_port()
    profile = yaml.safe_load(MODBUS.read_text())
    profile["connection"]["port"] = port
    profile["tags"][0]["word_order"] = "little"  # the mistake: the device sends big
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(profile))
    async with ModbusSimulator(load_profile(MODBUS), port=port) as sim:
        sim.set("temperature", 72.5)
        sim.set("pressure", 2.25)
        code, out, _ = await tracectl("profile", "probe", str(tmp_path / "p.yaml"))
    assert code == 0
    temperature = row(out, "temperature")
    assert temperature[1:5] == ["holding", "0..1", "0x4291", "0x0000"]
    assert temperature[-3:] == ["OUT", "OF", "SPEC"] and "60..90" in temperature
    assert "  temperature: as byte_order big, word_order big: 72.5  <- within spec\n" in out
    pressure = row(out, "pressure")
    assert pressure[5:9] == ["2.25", "bar", "good", "1..3.5"] and pressure[-1] == "ok"


async def test_an_opcua_probe_shows_the_nodes_type_value_and_status(
    tmp_path: Path, tracectl: Run
) -> None:
    port = free_port()
    source = LIBRARY / "opcua-reactor-plc.yaml"
    data = yaml.safe_load(source.read_text())
    data["connection"]["endpoint"] = f"opc.tcp://127.0.0.1:{port}/lot-trace/reactor"
    path = tmp_path / "plc.yaml"
    path.write_text(yaml.safe_dump(data))
    async with ReactorSimulator(port=port) as sim:
        await sim.set("Reactor1.Temperature", 71.25)
        await sim.set("Reactor1.Pressure", status="BadSensorFailure")
        code, out, _ = await tracectl("profile", "probe", str(path))
    assert code == 1  # a bad tag: the probe says so in its exit status
    temperature = row(out, "temperature")
    assert temperature[1:4] == ["ns=2;s=Reactor1.Temperature", "Double", "71.25"]
    assert "(Good" in temperature[4] and "71.25" in temperature[5:] and temperature[-1] == "ok"
    assert "BadSensorFailure" in " ".join(row(out, "pressure"))


async def test_an_rfid_probe_lists_a_few_seconds_of_reads(tmp_path: Path, tracectl: Run) -> None:
    async with SerialLink() as link, RfidReaderSimulator("mercury", link.device_port) as reader:
        path = tmp_path / "gate.yaml"
        data = yaml.safe_load((LIBRARY / "rfid-dock-door-gate.yaml").read_text())
        data["connection"]["port"] = link.edge_port
        path.write_text(yaml.safe_dump(data))
        probing = asyncio.create_task(tracectl("profile", "probe", str(path), "--seconds", "2"))
        await reader.wait_started()
        await reader.pass_pallet(bytes.fromhex("3074257BF7194E4000001A85"), duration_s=0.5)
        code, out, _ = await probing
    assert code == 0
    assert "item(s) in 2." in out
    assert "epc_hex=3074257BF7194E4000001A85, antenna=1" in out


async def test_a_scanner_probe_waits_for_one_scan(tmp_path: Path, tracectl: Run) -> None:
    async with SerialLink() as link, ScannerSimulator(link.device_port) as sim:
        path = tmp_path / "scanner.yaml"
        data = yaml.safe_load((LIBRARY / "scanner-line-station.yaml").read_text())
        data["connection"]["port"] = link.edge_port
        path.write_text(yaml.safe_dump(data))
        probing = asyncio.create_task(tracectl("profile", "probe", str(path), "--seconds", "20"))
        await asyncio.sleep(1.0)
        await sim.scan("(01)09506000134352(10)LOT-7")
        code, out, _ = await probing
    assert code == 0
    assert "1 item(s) in " in out and "text=(01)09506000134352(10)LOT-7" in out


async def test_a_device_that_does_not_answer_is_one_line(tmp_path: Path, tracectl: Run) -> None:
    profile = yaml.safe_load(MODBUS.read_text())
    profile["connection"] |= {"port": free_port(), "timeout_s": 0.5}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(profile))
    code, _, err = await tracectl("profile", "probe", str(tmp_path / "p.yaml"))
    assert code == 1
    assert err.startswith("tracectl: the device did not answer: tp-controller-1: cannot connect")


async def test_a_recorded_probe_is_in_the_audit(
    tmp_path: Path,
    tracectl: Run,
    collector: RunningCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACE_API_URL", collector.api_url)
    monkeypatch.setenv("TRACE_API_KEY", collector.keys[Role.provisioner])
    port = free_port()
    name = f"tpc-{uuid.uuid4().hex[:8]}"
    path = write(tmp_path, MODBUS, name=name)
    data = yaml.safe_load(path.read_text())
    data["connection"]["port"] = port
    path.write_text(yaml.safe_dump(data))
    async with ModbusSimulator(load_profile(MODBUS), port=port):
        code, out, _ = await tracectl("profile", "probe", str(path), "--record")
    assert code == 0 and "recorded in the collector's audit" in out
    async with collector.client(Role.reader) as api:
        audit = (await api.get(f"/api/v1/provisioning/audit?subject=profile&name={name}")).json()
    assert [a["action"] for a in audit] == ["probed"]
    assert (
        audit[0]["actor"].endswith("-provisioner") and "4 tag(s) read, 0 bad" in audit[0]["detail"]
    )
