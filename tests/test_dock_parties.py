"""Who shipped to whom, end to end: a keyboard-wedge scanner at a shipping door (a FIFO)
reads a despatch label naming the customer (GS1 AIs 410 ship to, 411 bill to) and a case of
our lot; the door's site configuration names us. The event travels over MQTT to the
collector, whose recall of the lot names the customer (from the ERP, by its GLN) and whose
EPCIS query says who shipped to whom (sourceList, destinationList)."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from pathlib import Path

import psycopg
import yaml

from cloud_collector.auth import Role
from device_profiles import LIBRARY
from protocols.gs1 import with_check_digit
from tests.cloud_collector.epcis.documents import events
from tests.conftest import RunningCollector, Services, running_agent, until
from tests.test_scanning_stations import write_fifo


async def test_a_shipment_from_our_door_names_the_customer_in_the_recall_and_in_epcis(
    tmp_path: Path, services: Services, collector: RunningCollector
) -> None:
    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
    shop = f"95{random.randrange(10**5):05d}"  # a company prefix no other test names
    shop_dc, shop_party = with_check_digit(shop + "00001"), with_check_digit(shop + "00000")
    us, door = with_check_digit("061414100000"), with_check_digit("061414100003")
    gtin, lot = with_check_digit("1061414100001"), f"L{uuid.uuid4().hex[:8].upper()}"
    gsin = with_check_digit("0614141" + f"{random.randrange(10**9):09d}")
    async with collector.client(Role.importer) as api:
        named = await api.put(
            "/api/v1/erp/customers",
            json=[{"customer_id": shop_party, "name": f"Shop {shop}", "address": "Market St"}],
        )
        assert named.status_code == 200, named.text

    fifo = tmp_path / "dock-3.fifo"
    os.mkfifo(fifo)
    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "edge_id": edge_id,
                "docks": [
                    {
                        "id": "dock-3",
                        "devices": [
                            {
                                "profile": str(LIBRARY / "scanner-dock-door.yaml"),
                                "connection": {"path": str(fifo)},
                            }
                        ],
                        "parties": [
                            {"side": "ours", "type": "owning_party", "gln": us},
                            {"side": "ours", "type": "location", "gln": door, "extension": "3"},
                        ],
                    }
                ],
            }
        )
    )

    async def shipped() -> tuple | None:
        async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
            cur = await conn.execute(
                "select event_id from trace_events where source_edge = %s and biz_step = %s",
                (edge_id, "shipping"),
            )
            return await cur.fetchone()

    async with running_agent(site, tmp_path / "edge", await services.register(edge_id)):
        await write_fifo(fifo, f"(402){gsin}(410){shop_dc}(411){shop_party}")
        await asyncio.sleep(0.2)
        await write_fifo(fifo, f"(01){gtin}(10){lot}(37)12")
        await until(shipped, 30, "the shipment stored by the collector")

    async with collector.client(Role.reader) as api:
        recall = (await api.get(f"/api/v1/lots/01/{gtin}/10/{lot}/recall")).json()
    shipped_lines = [x for x in recall["lines"] if x["status"] == "shipped"]
    assert [(x["customer_id"], x["customer"], x["quantity"]) for x in shipped_lines] == [
        (f"(417){shop_party}", f"Shop {shop}", 12.0)
    ]
    assert [c["customer"] for c in recall["customers"]] == [f"Shop {shop}"]

    async with collector.client(Role.reader) as api:
        [event] = await events(
            api, EQ_bizStep="shipping", MATCH_epcClass=f"https://id.gs1.org/01/{gtin}/10/{lot}"
        )
    assert event["destinationList"] == [
        {"type": "location", "destination": f"https://id.gs1.org/414/{shop_dc}"},
        {"type": "owning_party", "destination": f"https://id.gs1.org/417/{shop_party}"},
    ]
    assert event["sourceList"] == [
        {"type": "owning_party", "source": f"https://id.gs1.org/417/{us}"},
        {"type": "location", "source": f"https://id.gs1.org/414/{door}/254/3"},
    ]
