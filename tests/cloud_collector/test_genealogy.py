"""Quantities by construction: a batch is the node between the lots it used and the lots it
made, every quantity is the sum of the records that made it, and the trace, the recall,
the mass balance and the FSMA 204 rows read the same sums.

The plant of each test posts its events through the real ingest, as an edge would.
"""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from pydantic import ValidationError

from cloud_collector import genealogy
from cloud_collector.migrate import available, migrate
from protocols.mqtt.contract import Item, TransformationEventRecord
from tests.cloud_collector.plant import Plant, lot_item
from tests.cloud_collector.test_fsma204 import Chain, read_csv
from tests.cloud_collector.test_fsma204 import get as get_fsma
from tests.cloud_collector.test_trace import get
from tests.conftest import RunningCollector, Services


def pallet(gtin: str, lot: str, sscc: str, qty: float | None, uom: str | None = None) -> dict:
    """A pallet label: SSCC, GTIN, lot and (if printed) the quantity it holds."""
    item = {"epc": f"https://id.gs1.org/00/{sscc}", "sscc": sscc, "gtin": gtin, "lot": lot}
    return item | ({"quantity": qty, "uom": uom} if qty is not None else {})


def sscc(p: Plant, n: int) -> str:
    """An 18-digit SSCC unique to the test (the check digit is not checked here)."""
    return f"{int(p.tag, 16) % 10**8:08d}{n:010d}"


def batch_side(body: dict, batch: str, side: str) -> list[tuple[str, float | None, str | None]]:
    codes = {x["lot_id"]: x["lot_code"] for x in body["lots"]}
    [traced] = [b for b in body["batches"] if b["batch"]["batch_id"] == batch]
    return sorted((codes[x["lot_id"]], x["quantity"], x["uom"]) for x in traced[side])


@pytest.fixture
async def three_pallets(services: Services, collector: RunningCollector) -> Chain:
    """FLOUR received as three pallets of 400 kg; B1 consumes the three (scanned by their
    labels) into 1,200 kg of DOUGH, then 600 kg of it go out."""
    p = Chain(services)
    flour, dough = p.lot("FLOUR"), p.lot("DOUGH")
    pallets = [pallet(p.flour, flour, sscc(p, n), 400, "KGM") for n in (1, 2, 3)]
    await p.post(
        p.receipt(pallets, f"PO-{p.tag}"),
        p.batch(f"B1-{p.tag}", pallets, [lot_item(p.dough, dough, 1200, "KGM")]),
        p.shipment([lot_item(p.dough, dough, 600, "KGM")], f"SH-{p.tag}"),
    )
    return p


async def test_three_pallets_of_one_lot_consumed_count_three_times(
    three_pallets: Chain, collector: RunningCollector
) -> None:
    p = three_pallets
    flour, dough = p.lot("FLOUR"), p.lot("DOUGH")
    back = (await get(collector, f"/api/v1/lots/01/{p.dough}/10/{dough}/trace/backward")).json()
    assert batch_side(back, f"B1-{p.tag}", "inputs") == [(flour, 1200.0, "KGM")]
    assert batch_side(back, f"B1-{p.tag}", "outputs") == [(dough, 1200.0, "KGM")]
    # 1,200 kg in, 1,200 kg out: balanced (counting the first pallet only, it was not).
    assert not any("balance" in g for g in back["gaps"]), back["gaps"]
    lots = {x["lot_code"]: x for x in back["lots"]}
    assert (lots[flour]["quantity"], lots[flour]["consumed_quantity"]) == (1200.0, 1200.0)
    # The recall: the flour all went into the dough; half the dough is left.
    recall = (await get(collector, f"/api/v1/lots/01/{p.flour}/10/{flour}/recall")).json()
    lines = sorted((x["lot_code"], x["status"], x["quantity"]) for x in recall["lines"])
    assert lines == [(dough, "on_hand", 600.0), (dough, "shipped", 600.0)]
    # FSMA 204: one receiving row for the three pallets, one food-used row, both 1,200 kg.
    rows = read_csv(await get_fsma(collector, f"/api/v1/fsma204/lots/01/{p.flour}/10/{flour}"))
    summary = [
        (r["Critical Tracking Event"], r["Traceability Lot Code"], r["Quantity"])
        for r in rows
        if r["Traceability Lot Code"] == flour
    ]
    assert summary == [("Receiving", flour, "1200"), ("Transformation (food used)", flour, "1200")]
    received = rows[0]
    assert received["Unit IDs"] == " ".join(f"sscc:{sscc(p, n)}" for n in (1, 2, 3))


async def test_one_input_two_outputs_counts_the_input_once(
    services: Services, collector: RunningCollector
) -> None:
    p = Plant(services)
    flour, bread, rolls = p.lot("FLOUR"), p.lot("BREAD"), p.lot("ROLLS")
    FLOUR, BREAD, ROLLS = "09506000134352", "09506000134383", "09506000134390"
    await p.post(
        p.receipt([lot_item(FLOUR, flour, 1000, "KGM")], f"PO-{p.tag}"),
        p.batch(
            f"B-{p.tag}",
            [lot_item(FLOUR, flour, 1000, "KGM")],
            [lot_item(BREAD, bread, 600, "KGM"), lot_item(ROLLS, rolls, 400, "KGM")],
        ),
    )
    fwd = (await get(collector, f"/api/v1/lots/01/{FLOUR}/10/{flour}/trace/forward")).json()
    assert batch_side(fwd, f"B-{p.tag}", "inputs") == [(flour, 1000.0, "KGM")]
    assert batch_side(fwd, f"B-{p.tag}", "outputs") == [
        (bread, 600.0, "KGM"),
        (rolls, 400.0, "KGM"),
    ]
    # The walk's edges carry no quantity to be summed once per output.
    assert (
        sorted(set(link) for link in fwd["links"]) == [{"input_lot", "output_lot", "batch_id"}] * 2
    )
    assert not any("balance" in g for g in fwd["gaps"]), fwd["gaps"]
    recall = (await get(collector, f"/api/v1/lots/01/{FLOUR}/10/{flour}/recall")).json()
    # The flour went into the batch: none of it is left on hand.
    assert sorted((x["lot_code"], x["status"], x["quantity"]) for x in recall["lines"]) == [
        (bread, "on_hand", 600.0),
        (rolls, "on_hand", 400.0),
    ]


async def test_a_lot_produced_as_twenty_pallets(
    services: Services, collector: RunningCollector
) -> None:
    p = Chain(services)
    flour, bread = p.lot("FLOUR"), p.lot("BREAD")
    pallets = [pallet(p.bread, bread, sscc(p, n), 50, "EA") for n in range(20)]
    # The shipment of five pallets arrives before the batch that made them (a late event):
    # the lot's quantities are right once the history is complete, whatever the order.
    await p.post(p.shipment(pallets[:5], f"SH-{p.tag}"))
    await p.post(
        p.batch(f"B-{p.tag}", [lot_item(p.flour, flour, 500, "KGM")], pallets),
    )
    body = (await get(collector, f"/api/v1/lots/01/{p.bread}/10/{bread}/trace/backward")).json()
    assert body["lot"]["quantity"] == 1000.0 and body["lot"]["uom"] == "EA"
    assert body["lot"]["shipped_quantity"] == 250.0
    assert batch_side(body, f"B-{p.tag}", "outputs") == [(bread, 1000.0, "EA")]
    recall = (await get(collector, f"/api/v1/lots/01/{p.bread}/10/{bread}/recall")).json()
    assert sorted((x["status"], x["quantity"]) for x in recall["lines"]) == [
        ("on_hand", 750.0),
        *[("shipped", 50.0)] * 5,
    ]
    rows = read_csv(await get_fsma(collector, f"/api/v1/fsma204/lots/01/{p.bread}/10/{bread}"))
    by_cte = {r["Critical Tracking Event"]: r for r in rows if r["Traceability Lot Code"] == bread}
    # One row per event per lot: 20 pallets made, 5 shipped, each summed.
    assert len([r for r in rows if r["Traceability Lot Code"] == bread]) == 2
    assert by_cte["Transformation (food produced)"]["Quantity"] == "1000"
    assert by_cte["Shipping"]["Quantity"] == "250"
    assert len(by_cte["Shipping"]["Unit IDs"].split()) == 5
    # A resend of the batch changes nothing.
    p.seq -= 1
    await p.post(p.batch(f"B-{p.tag}", [lot_item(p.flour, flour, 500, "KGM")], pallets))
    again = (await get(collector, f"/api/v1/lots/01/{p.bread}/10/{bread}/trace/backward")).json()
    assert again["lot"]["quantity"] == 1000.0


async def test_quantities_in_different_units_are_never_added(
    services: Services, collector: RunningCollector
) -> None:
    p = Chain(services)
    flour, dough = p.lot("FLOUR"), p.lot("DOUGH")
    await p.post(
        p.receipt(
            [
                pallet(p.flour, flour, sscc(p, 1), 400, "KGM"),
                pallet(p.flour, flour, sscc(p, 2), 16, "BG"),
            ],
            f"PO-{p.tag}",
        ),
        p.batch(
            f"B-{p.tag}",
            [lot_item(p.flour, flour, 400, "KGM"), lot_item(p.flour, flour, 16, "BG")],
            [lot_item(p.dough, dough, 800, "KGM")],
        ),
    )
    body = (await get(collector, f"/api/v1/lots/01/{p.flour}/10/{flour}/trace/forward")).json()
    assert (body["lot"]["quantity"], body["lot"]["uom"]) == (None, None)
    note = "made or received in several units of measure (16 BG, 400 KGM): not added"
    assert body["lot"]["quantity_note"] == note
    assert any(g.endswith(note) and flour in g for g in body["gaps"]), body["gaps"]
    # The batch keeps both, apart; it balances in kilograms only and says so.
    assert batch_side(body, f"B-{p.tag}", "inputs") == [(flour, 16.0, "BG"), (flour, 400.0, "KGM")]
    assert any("inputs 400 KGM and outputs 800 KGM do not balance" in g for g in body["gaps"])
    rows = read_csv(await get_fsma(collector, f"/api/v1/fsma204/lots/01/{p.flour}/10/{flour}"))
    received = next(r for r in rows if r["Critical Tracking Event"] == "Receiving")
    assert (received["Quantity"], received["Unit of Measure"]) == ("", "")
    assert (
        "Quantity: recorded in several units of measure (16 BG, 400 KGM): not added"
        in (received["Missing KDEs"])
    )


async def test_a_pallet_consumed_by_its_tag_alone_holds_what_it_was_received_with(
    services: Services, collector: RunningCollector
) -> None:
    p = Chain(services)
    flour, dough = p.lot("FLOUR"), p.lot("DOUGH")
    pallets = [pallet(p.flour, flour, sscc(p, n), 400, "KGM") for n in (1, 2)]
    tag = {"epc": f"urn:epc:id:sscc:0{sscc(p, 1)[1:8]}.{sscc(p, 1)[0]}{sscc(p, 1)[8:17]}"}
    read = [{"sscc": sscc(p, 1), **tag}, {"sscc": sscc(p, 2), "epc": "urn:x"}]
    await p.post(
        p.receipt(pallets, f"PO-{p.tag}"),
        # Read at the line by their RFID tags, then one label scanned with no quantity.
        p.batch(f"B-{p.tag}", read, [lot_item(p.dough, dough, 800, "KGM")]),
    )
    body = (await get(collector, f"/api/v1/lots/01/{p.dough}/10/{dough}/trace/backward")).json()
    assert batch_side(body, f"B-{p.tag}", "inputs") == [(flour, 800.0, "KGM")]
    assert not any("balance" in g or "no quantity" in g for g in body["gaps"]), body["gaps"]


async def test_a_partly_counted_lot_is_a_gap(
    services: Services, collector: RunningCollector
) -> None:
    p = Chain(services)
    flour, dough = p.lot("FLOUR"), p.lot("DOUGH")
    await p.post(
        p.batch(
            f"B-{p.tag}",
            [
                pallet(p.flour, flour, sscc(p, 1), 400, "KGM"),
                pallet(p.flour, flour, sscc(p, 2), None),
            ],
            [lot_item(p.dough, dough, 800, "KGM")],
        ),
    )
    body = (await get(collector, f"/api/v1/lots/01/{p.dough}/10/{dough}/trace/backward")).json()
    assert (
        f"batch B-{p.tag}: 1 of the 2 items of lot {flour} (GTIN {p.flour}, id "
        f"{next(x['lot_id'] for x in body['lots'] if x['lot_code'] == flour)}) it used gave no "
        "quantity: the sum it keeps is short by what they held"
    ) in body["gaps"]


def _wide(
    inputs: int, outputs: int, distinct: bool, validate: bool = True
) -> TransformationEventRecord:
    """A transformation of `inputs` x `outputs` pallets: each of a lot of its own, or all of
    one lot per side."""
    tag = datetime.now(UTC).strftime("%H%M%S%f")

    def items(n: int, gtin: str, base: int) -> list[dict]:
        return [
            {
                "epc": f"https://id.gs1.org/00/{base + i:018d}",
                "sscc": f"{base + i:018d}",
                "gtin": gtin,
                "lot": f"W{tag[-8:]}-{i if distinct else 0}",
                "quantity": 1.0,
                "uom": "KGM",
            }
            for i in range(n)
        ]

    fields = {
        "seq": 0,
        "time": datetime.now(UTC) - timedelta(minutes=1),
        "event_id": f"wide-{tag}",
        "transformation_id": f"WIDE-{tag}",
        "read_point": "line-1",
        "line": "line-1",
        "batch": f"WIDE-{tag}",
        "inputs": items(inputs, "09506000134352", int(tag) * 100_000),
        "outputs": items(outputs, "09506000134369", int(tag) * 100_000 + 50_000),
    }
    if validate:
        return TransformationEventRecord.model_validate(fields)
    sides = {side: [Item.model_validate(i) for i in fields[side]] for side in ("inputs", "outputs")}
    return TransformationEventRecord.model_construct(**{**fields, **sides})


async def test_the_widest_transformation_the_contract_allows_is_refused_at_once(
    services: Services,
) -> None:
    """10,000 input lots x 10,000 output lots would be 10^8 links. The contract refuses
    such a record; the genealogy refuses it too (an event built past the contract, e.g. by
    a caller of its own) before a statement runs, in bounded time and memory, naming the
    limit."""
    with pytest.raises(ValidationError, match="10000 input lots x 10000 output lots"):
        _wide(10_000, 10_000, distinct=True)
    event = _wide(10_000, 10_000, distinct=True, validate=False)
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        tracemalloc.start()
        started = time.perf_counter()
        with pytest.raises(genealogy.TransformationTooWide) as refused:
            await genealogy.project_transformation(conn, event, "edge-wide")
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        await conn.rollback()
    assert "10,000 input lots x 10,000 output lots = 100,000,000 lot pairs" in str(refused.value)
    assert f"than the {genealogy.MAX_LOT_PAIRS:,}" in str(refused.value)
    # Refused before any statement: well under a second quietly, loose for a loaded machine.
    assert elapsed < 10.0 and peak < 20 * 2**20, (elapsed, peak)


async def test_the_widest_transformation_of_one_lot_a_side_links_once(services: Services) -> None:
    """10,000 pallets in and 10,000 out (the contract's bound), one lot a side: one edge,
    the sums of 10,000 items each, in time linear in the items."""
    event = _wide(10_000, 10_000, distinct=False)
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        started = time.perf_counter()
        await genealogy.project_transformation(conn, event, "edge-wide")
        elapsed = time.perf_counter() - started
        cur = await conn.execute(
            "select (select count(*) from lot_links where event_id = %(e)s),"
            " (select sum(quantity) from batch_inputs where event_id = %(e)s),"
            " (select sum(quantity) from batch_outputs where event_id = %(e)s)",
            {"e": event.event_id},
        )
        assert await cur.fetchone() == (1, 10_000.0, 10_000.0)
        await conn.rollback()
    # Linear takes seconds; a path quadratic in the items (10^8 pairs) takes far longer
    # than the 300 s every test is given. The bound is loose for slow, shared CI machines.
    assert elapsed < 120, elapsed


def test_migration_recounts_what_earlier_versions_stored(services: Services) -> None:
    """A database of before migration 0018: the lot kept its first pallet's quantity and the
    link one pallet's. The migration rebuilds the batch's sides from the stored items."""
    admin = services.database_url.rsplit("/", 1)[0] + "/postgres"
    url = services.database_url.rsplit("/", 1)[0] + "/trace_genealogy_migrate_test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("drop database if exists trace_genealogy_migrate_test with (force)")
        conn.execute("create database trace_genealogy_migrate_test")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "create table schema_migrations (version integer primary key, name text not null,"
                " applied_at timestamptz not null default now())"
            )
            for m in available():
                if m.version < 18:
                    with conn.transaction():
                        conn.execute(m.path.read_text(encoding="utf-8"))  # type: ignore[arg-type]
                        conn.execute(
                            "insert into schema_migrations values (%s, %s)", (m.version, m.name)
                        )
            conn.execute(OLD_GENEALOGY)
        assert 18 in migrate(url)
        with psycopg.connect(url) as conn:
            lots = dict(
                conn.execute(
                    "select lot_code, (quantity, uom, shipped_quantity, consumed_quantity)::text"
                    " from lots"
                ).fetchall()
            )
            sides = conn.execute(
                "select 'in', lot_id, uom, quantity, items from batch_inputs union all"
                " select 'out', lot_id, uom, quantity, items from batch_outputs order by 1"
            ).fetchall()
            links = conn.execute("select * from lot_links").fetchall()
        assert lots == {"FLOUR": "(1200,KGM,,1200)", "DOUGH": "(1200,KGM,,)"}
        assert sides == [("in", 1, "KGM", 1200.0, 3), ("out", 2, "KGM", 1200.0, 1)]
        assert links == [(1, 2, "B1", "e1")]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("drop database if exists trace_genealogy_migrate_test with (force)")


# What the projection of before 0018 stored for three 400 kg pallets of FLOUR received,
# then consumed by their SSCCs alone into 1,200 kg of DOUGH.
OLD_GENEALOGY = """
insert into lots (gtin, lot_code, quantity, uom, origin) overriding system value values
    ('09506000134352', 'FLOUR', 400, 'KGM', 'supplier');
insert into lots (gtin, lot_code, quantity, uom, origin, batch_id) values
    ('09506000134369', 'DOUGH', 1200, 'KGM', 'own', 'B1');
insert into units (epc, sscc, lot_id)
select 'sscc:00000000000000000' || n, '00000000000000000' || n, 1 from generate_series(1, 3) n;
insert into receipts (event_id, position, lot_id, epc, quantity, uom, time)
select 'r1', n, 1, 'sscc:00000000000000000' || n, 400, 'KGM', '2026-11-20T06:00Z'
from generate_series(1, 3) n;
insert into trace_events (event_id, event_type, event_time, biz_step, read_point, batch_id, body)
values ('e1', 'TransformationEvent', '2026-11-20T07:00Z', 'commissioning', 'line-1', 'B1', '{}');
insert into event_items (event_id, role, position, epc, sscc)
select 'e1', 'input', n, 'urn:x:' || n, '00000000000000000' || n from generate_series(1, 3) n;
insert into event_items (event_id, role, position, epc_class, gtin, lot, quantity, uom)
values ('e1', 'output', 0, 'x', '09506000134369', 'DOUGH', 1200, 'KGM');
insert into lot_links values (1, 2, 'B1', 'e1', 400, 'KGM');
"""


async def test_an_edge_batch_in_the_partners_namespace_is_refused(services: Services) -> None:
    event = _wide(1, 1, distinct=False).model_copy(update={"batch": "partner:P1:B-1"})
    async with await psycopg.AsyncConnection.connect(services.database_url) as conn:
        with pytest.raises(genealogy.ReservedBatchId, match="namespace of partners' batches"):
            await genealogy.project_transformation(conn, event, "edge-1")
        await conn.rollback()
