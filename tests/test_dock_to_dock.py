"""The chain the genealogy is built from, end to end at the wire level: a pallet passes the
receiving gate of dock 1 (a Mercury reader on a pseudo-terminal), its lot is consumed into a
batch at line 1 (a serial scanner), the batch's output pallet is shipped through the gate
of dock 2; the collector holds the three events with the right identifiers."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg
import yaml

from device_profiles import LIBRARY
from protocols.rfid.simulator import RfidReaderSimulator
from protocols.scanner.simulator import ScannerSimulator
from protocols.serial_link import SerialLink
from tests.conftest import RunningCollector, Services, running_agent, until

RECEIVED_PALLET = bytes.fromhex("3114257BF4499602D2000000")  # SSCC 106141412345678908
SHIPPED_PALLET = bytes.fromhex("3114257BF43B9ACA01000000")  # SSCC 106141410000000019


def gate_profile(folder: Path, name: str, read_point: str) -> Path:
    profile = yaml.safe_load((LIBRARY / "rfid-dock-door-gate.yaml").read_text())
    profile |= {"name": name, "window_s": 2.0}  # longer than a pallet takes to pass
    profile["antennas"] = [
        {"port": 1, "read_point": read_point, "side": "outside"},
        {"port": 2, "read_point": read_point, "side": "inside"},
    ]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


async def trace(url: str, edge_id: str) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select e.event_type, e.biz_step, e.read_point, e.biz_transactions, i.role,"
            " i.sscc, i.gtin, i.lot, i.epc, e.flags"
            " from trace_events e join event_items i using (event_id)"
            " where e.source_edge = %s order by e.event_time, i.role, i.position",
            (edge_id,),
        )
        return await cur.fetchall()


async def test_received_consumed_produced_shipped(
    tmp_path: Path, services: Services, collector: RunningCollector
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    async with SerialLink() as gate1, SerialLink() as gate2, SerialLink() as line_scanner:
        site = tmp_path / "site.yaml"
        site.write_text(
            yaml.safe_dump(
                {
                    "edge_id": edge_id,
                    "lines": [
                        {
                            "id": "line-1",
                            "devices": [
                                {
                                    "profile": str(LIBRARY / "scanner-line-station.yaml"),
                                    "connection": {"port": line_scanner.edge_port},
                                }
                            ],
                        }
                    ],
                    "docks": [
                        {
                            "id": "dock-1",
                            "devices": [
                                {
                                    "profile": str(gate_profile(tmp_path, "gate-1", "dock-1-door")),
                                    "connection": {"port": gate1.edge_port},
                                }
                            ],
                        },
                        {
                            "id": "dock-2",
                            "devices": [
                                {
                                    "profile": str(gate_profile(tmp_path, "gate-2", "dock-2-door")),
                                    "connection": {"port": gate2.edge_port},
                                }
                            ],
                        },
                    ],
                }
            )
        )
        reader1 = RfidReaderSimulator("mercury", gate1.device_port)
        reader2 = RfidReaderSimulator("mercury", gate2.device_port)
        scanner = ScannerSimulator(line_scanner.device_port, terminator="\r")
        async with (
            reader1,
            reader2,
            running_agent(site, tmp_path / "edge", await services.register(edge_id)) as agent,
        ):
            scanner.start()
            try:
                await reader1.wait_started(10)
                await reader2.wait_started(10)
                agent.stations.bind_document("dock-1", "po", "PO-1", "clerk")
                await reader1.pass_pallet(RECEIVED_PALLET, inbound=True, duration_s=1.0)
                await until(lambda: _count(services, edge_id, 1), 15, "the receipt stored")
                for text in (
                    "WO-777",
                    "(01)09506000134352(10)LOT-IN-1",
                    "(00)106141410000000019",
                    "WO-777-END",
                ):
                    await scanner.scan(text)
                    await asyncio.sleep(0.1)
                agent.stations.bind_document("dock-2", "desadv", "SH-1", "clerk")
                await reader2.pass_pallet(SHIPPED_PALLET, inbound=False, duration_s=1.0)
                await until(lambda: _count(services, edge_id, 3), 20, "all three events stored")
                status = agent.status()["devices"]
                assert status["gate-1"]["gate"]["reads"] > 10
                assert status["gate-2"]["line"]["bad_frames"] == 0
                assert status["line-2-scanner"]["scans"]["scans"] == 4
            finally:
                scanner.stop()

    rows = await trace(services.database_url, edge_id)
    assert rows == [
        (
            "ObjectEvent",
            "receiving",
            "dock-1-door",
            [{"type": "po", "id": "PO-1"}],
            "observed",
            "106141412345678908",
            None,
            None,
            "urn:epc:id:sscc:0614141.1234567890",
            [],
        ),
        (
            "TransformationEvent",
            "commissioning",
            "line-1",
            [],
            "input",
            None,
            "09506000134352",
            "LOT-IN-1",
            None,
            [],
        ),
        (
            "TransformationEvent",
            "commissioning",
            "line-1",
            [],
            "output",
            "106141410000000019",
            None,
            None,
            "https://id.gs1.org/00/106141410000000019",
            [],
        ),
        (
            "ObjectEvent",
            "shipping",
            "dock-2-door",
            [{"type": "desadv", "id": "SH-1"}],
            "observed",
            "106141410000000019",
            None,
            None,
            "urn:epc:id:sscc:0614141.1000000001",
            [],
        ),
    ]
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        sightings = await (
            await conn.execute(
                "select body->'sightings'->0->>'direction', (body->'sightings'->0->>'count')::int"
                " from trace_events where source_edge = %s and event_type = 'ObjectEvent'"
                " order by event_time",
                (edge_id,),
            )
        ).fetchall()
    assert [s[0] for s in sightings] == ["in", "out"]
    assert all(s[1] > 10 for s in sightings)  # dozens of reads collapsed into one observation


async def _count(services: Services, edge_id: str, n: int) -> bool:
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        row = await (
            await conn.execute(
                "select count(*) from trace_events where source_edge = %s", (edge_id,)
            )
        ).fetchone()
    return bool(row and row[0] >= n)
