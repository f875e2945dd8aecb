"""Scanning stations end to end: a serial scanner at a line (over a pseudo-terminal, real
frames) builds a batch's genealogy; a keyboard-wedge scanner at a dock door (a FIFO) binds
the door to a purchase order and receives a pallet against it; the collector holds the
events with the right identifiers."""

from __future__ import annotations

import asyncio
import errno
import os
import uuid
from pathlib import Path

import psycopg
import yaml

from device_profiles import LIBRARY
from protocols.scanner.simulator import ScannerSimulator
from protocols.serial_link import SerialLink
from tests.conftest import RunningCollector, Services, running_agent, until

GS = "\x1d"
FLOUR = f"]C1010950600013435210FLOUR7{GS}3725"  # GS1-128: GTIN, lot FLOUR7, 25 units
SUGAR = "(01)09506000134352(10)SUGAR3"  # the bracketed form some scanners send
OUR_PALLET = "]C100106141410000000019"  # SSCC under our own company prefix: output
SUPPLIER_PALLET = "(00)309506000999999999"  # a supplier's pallet


async def write_fifo(path: Path, line: str) -> None:
    """Write one line as a wedge would, once the edge holds the FIFO open."""
    for _ in range(200):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: nobody reads the FIFO yet
                raise
            await asyncio.sleep(0.05)
            continue
        try:
            os.write(fd, line.encode() + b"\n")
        finally:
            os.close(fd)
        return
    raise AssertionError(f"the edge never opened {path}")


async def events_of(url: str, edge_id: str) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select event_type, biz_step, batch_id, operator, biz_transactions, flags, event_id"
            " from trace_events where source_edge = %s order by event_time, event_type",
            (edge_id,),
        )
        return await cur.fetchall()


async def items_of(url: str, event_id: str) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select role, gtin, lot, sscc, quantity, epc_class, epc from event_items"
            " where event_id = %s order by role, position",
            (event_id,),
        )
        return await cur.fetchall()


async def test_line_and_dock_scanners(
    tmp_path: Path, services: Services, collector: RunningCollector
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    fifo = tmp_path / "dock-3.fifo"
    os.mkfifo(fifo)
    async with SerialLink() as link:
        site = tmp_path / "site.yaml"
        site.write_text(
            yaml.safe_dump(
                {
                    "edge_id": edge_id,
                    "lines": [
                        {
                            "id": "line-2",
                            "devices": [
                                {
                                    "profile": str(LIBRARY / "scanner-line-station.yaml"),
                                    "connection": {"port": link.edge_port},
                                }
                            ],
                        }
                    ],
                    "docks": [
                        {
                            "id": "dock-3",
                            "devices": [
                                {
                                    "profile": str(LIBRARY / "scanner-dock-door.yaml"),
                                    "connection": {"path": str(fifo)},
                                }
                            ],
                        }
                    ],
                }
            )
        )
        scanner = ScannerSimulator(link.device_port, terminator="\r")
        scanner.start()
        try:

            async def both() -> list[tuple] | None:
                got = await events_of(services.database_url, edge_id)
                return got if len(got) >= 2 else None

            async with running_agent(site, tmp_path / "edge", await services.register(edge_id)):
                await asyncio.sleep(0.5)
                for text in ("OP-0042", "WO-5001", FLOUR, SUGAR, OUR_PALLET, "WO-5001-END"):
                    await scanner.scan(text)
                    await asyncio.sleep(0.1)
                await write_fifo(fifo, "PO-4711")
                await asyncio.sleep(0.2)
                await write_fifo(fifo, SUPPLIER_PALLET)
                events = await until(both, 20, "the transformation and the receipt stored")
        finally:
            scanner.stop()

    by_type = {e[0]: e for e in events}
    transformation = by_type["TransformationEvent"]
    assert transformation[1:4] == ("commissioning", "WO-5001", "OP-0042")
    assert transformation[5] == []
    assert await items_of(services.database_url, transformation[6]) == [
        (
            "input",
            "09506000134352",
            "FLOUR7",
            None,
            25.0,
            "https://id.gs1.org/01/09506000134352/10/FLOUR7",
            None,
        ),
        (
            "input",
            "09506000134352",
            "SUGAR3",
            None,
            None,
            "https://id.gs1.org/01/09506000134352/10/SUGAR3",
            None,
        ),
        (
            "output",
            None,
            None,
            "106141410000000019",
            None,
            None,
            "https://id.gs1.org/00/106141410000000019",
        ),
    ]
    receipt = by_type["ObjectEvent"]
    assert receipt[1] == "receiving" and receipt[4] == [{"type": "po", "id": "PO-4711"}]
    assert receipt[5] == []
    assert await items_of(services.database_url, receipt[6]) == [
        (
            "observed",
            None,
            None,
            "309506000999999999",
            None,
            None,
            "https://id.gs1.org/00/309506000999999999",
        ),
    ]
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        batch = await (
            await conn.execute(
                "select started_by, ended_by from batches"
                " where batch_id = 'WO-5001' and edge_id = %s",
                (edge_id,),
            )
        ).fetchone()
    assert batch == ("OP-0042", "OP-0042")
