"""A held lot at the shipping door, end to end at the wire level: the quality team holds a
lot through the HTTP API, the collector's announcer publishes the hold set (retained,
through the broker's ACL), the edge keeps it; the lot's case label scanned at dock door 3
(a keyboard-wedge scanner on a FIFO, bound to a shipment) makes a shipping event flagged
`held_lot`, an alarm in the edge's status and an alert row at the collector. Released, the
same label ships without a flag and raises nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

import psycopg
import yaml

from cloud_collector import holds
from cloud_collector.auth import Role
from cloud_collector.broker_identities import IdentityKind
from device_profiles import LIBRARY
from protocols.mqtt.contract import Item
from tests.cloud_collector.plant import Plant, lot_item
from tests.conftest import RunningCollector, Services, now_true, running_agent, until
from tests.test_scanning_stations import write_fifo

HELD_GTIN, FREE_GTIN = "10614141000019", "10614141000026"  # our company prefix: shipped


async def shipping_events(url: str, edge_id: str) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "select e.event_id, i.gtin, i.lot, e.flags, e.biz_transactions"
            " from trace_events e join event_items i using (event_id)"
            " where e.source_edge = %s and e.biz_step = 'shipping'"
            " order by e.event_time, e.event_id",
            (edge_id,),
        )
        return await cur.fetchall()


async def test_a_held_lot_at_the_shipping_door_is_flagged_until_released(
    tmp_path: Path, services: Services, collector: RunningCollector
) -> None:
    plant = Plant(services)
    held_lot, free_lot = plant.lot("HELD"), plant.lot("FREE")
    await plant.post(
        plant.batch(
            f"B-{plant.tag}",
            [],
            [lot_item(HELD_GTIN, held_lot, 40, "EA"), lot_item(FREE_GTIN, free_lot, 40, "EA")],
        )
    )
    announcer_broker = await services.register(f"holds-test-{os.getpid()}", IdentityKind.collector)
    settings = collector.settings.model_copy(update={"mqtt": announcer_broker})
    holds_settings = holds.HoldsSettings(
        username=announcer_broker.username, password=announcer_broker.password, check_every_s=0.2
    )
    announced = holds.AnnouncerState()
    announcer = asyncio.create_task(holds.announce_holds(settings, holds_settings, None, announced))

    edge_id = f"edge-{uuid.uuid4().hex[:8]}"
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
                    }
                ],
            }
        )
    )
    held_label = f"(01){HELD_GTIN}(10){held_lot}"
    free_label = f"(01){FREE_GTIN}(10){free_lot}"
    held_path = f"/api/v1/lots/01/{HELD_GTIN}/10/{held_lot}"
    case = Item(gtin=HELD_GTIN, lot=held_lot, raw=held_label)
    try:
        async with collector.client(Role.quality) as api:
            put = await api.post(f"{held_path}/hold", json={"reason": "foreign body complaint"})
            assert put.status_code == 201, put.text
        async with running_agent(
            site, tmp_path / "edge", await services.register(edge_id)
        ) as agent:
            await until(
                lambda: now_true(bool(agent.held.match([case]))), 15, "the hold at the edge"
            )
            await write_fifo(fifo, "SO-4242")
            await asyncio.sleep(0.2)
            await write_fifo(fifo, held_label)
            await write_fifo(fifo, free_label)

            async def two() -> list[tuple] | None:
                got = await shipping_events(services.database_url, edge_id)
                return got if len(got) >= 2 else None

            first = await until(two, 20, "the two shipping events stored")
            alarms = agent.status()["alarms"]
            assert any(
                "HELD LOT at dock-3 against desadv SO-4242" in a and held_lot in a for a in alarms
            )
            assert agent.status()["holds"]["flagged"] == 1

            async with collector.client(Role.quality) as api:
                freed = await api.post(f"{held_path}/release", json={"reason": "lab cleared it"})
                assert freed.status_code == 200, freed.text
            await until(
                lambda: now_true(not agent.held.match([case])), 15, "the release at the edge"
            )
            await write_fifo(fifo, held_label)

            async def three() -> list[tuple] | None:
                got = await shipping_events(services.database_url, edge_id)
                return got if len(got) >= 3 else None

            after = await until(three, 20, "the shipment after the release stored")
    finally:
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcer

    desadv = [{"type": "desadv", "id": "SO-4242"}]
    by_lot = {row[2]: row for row in first}
    assert by_lot[held_lot][3] == ["held_lot"] and by_lot[held_lot][4] == desadv
    assert by_lot[free_lot][3] == []
    assert after[2][2] == held_lot and after[2][3] == []  # released: ships without a flag

    async with collector.client(Role.reader) as api:
        alerts = (await api.get("/api/v1/alerts", params={"kind": "held_lot_at_door"})).json()
    mine = [a for a in alerts if a["source_edge"] == edge_id]
    assert len(mine) == 1, mine
    [alert] = mine
    assert alert["event_id"] == by_lot[held_lot][0]
    assert (alert["biz_location"], alert["documents"]) == ("dock-3", desadv)
    assert [(x["lot_code"], x["reason"]) for x in alert["lots"]] == [
        (held_lot, "foreign body complaint")
    ]
    assert announced.published >= 2
