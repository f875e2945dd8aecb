"""What the edges get of the holds: each lot in force with the units known to be of it (a
pallet read by its SSCC, a case by its SGTIN), nothing of released holds."""

from __future__ import annotations

import psycopg

from cloud_collector import holds, trace
from tests.cloud_collector.plant import Plant, lot_item
from tests.conftest import Services

GTIN = "10614141000019"


async def test_the_hold_set_names_each_held_lot_with_its_units(services: Services) -> None:
    plant = Plant(services)
    held, released = plant.lot("H"), plant.lot("R")
    await plant.post(
        plant.batch(
            f"B-{plant.tag}", [], [lot_item(GTIN, held, 1, "EA"), lot_item(GTIN, released, 1, "EA")]
        )
    )
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        lot = await trace.resolve(c, f"01/{GTIN}/10/{held}")
        other = await trace.resolve(c, f"01/{GTIN}/10/{released}")
        sgtin = f"urn:epc:id:sgtin:0614141.100000.{plant.tag}"
        sscc = "1" + str(int(plant.tag, 16)).zfill(17)
        await c.execute(
            "insert into units (epc, sscc, gtin, serial, lot_id) values"
            " (%s, null, %s, %s, %s), (%s, %s, null, null, %s)",
            (
                sgtin,
                GTIN,
                plant.tag,
                lot.lot_id,
                f"urn:epc:id:sscc:x.{plant.tag}",
                sscc,
                lot.lot_id,
            ),
        )
        await holds.hold(c, lot, "complaint", "qa")
        await holds.hold(c, other, "checked", "qa")
        await holds.release(c, other, "fine", "qa")
        published = {(x.gtin, x.lot): x for x in await holds.hold_set(c)}
    assert (GTIN, released) not in published
    mine = published[(GTIN, held)]
    assert mine.reason == "complaint"
    assert sorted(mine.epcs) == sorted([sgtin, f"urn:epc:id:sscc:x.{plant.tag}"])
    assert mine.ssccs == [sscc]
