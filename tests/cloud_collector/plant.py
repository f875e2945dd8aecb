"""The plant the trace tests look at, in one home: posts events as an edge would
(`Plant`) and bakes the bakery of the trace, FSMA 204 and page tests (`bake`), with what
its ERP says (`erp`).

    supplier FLOUR + SUGAR --B1--> DOUGH --B2--> BREAD --(SH-1 to Bakery Co)
                     \\             \\
                      \\----------- B3 --> CAKE (100 of 400 on SH-2; rest on hand)

SUGAR reaches CAKE twice (directly and through DOUGH): a diamond. Without the cake, all the
dough goes into the bread; with `rework`, some bread goes back into the dough (a loop).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from protocols.mqtt import topics
from tests.conftest import RunningCollector, Services

T0 = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
FLOUR_GTIN, SUGAR_GTIN, DOUGH_GTIN = "09506000134352", "09506000134369", "09506000134376"
BREAD_GTIN, CAKE_GTIN = "09506000134383", "09506000134390"


def lot_item(gtin: str, lot: str, qty: float | None = None, uom: str | None = None) -> dict:
    item = {"epc_class": f"https://id.gs1.org/01/{gtin}/10/{lot}", "gtin": gtin, "lot": lot}
    return item | ({"quantity": qty, "uom": uom} if qty is not None else {})


class Plant:
    """Posts events as an edge would, numbering them, and names lots uniquely per test."""

    def __init__(self, services: Services) -> None:
        self.url = services.database_url
        self.edge = f"edge-{uuid.uuid4().hex[:8]}"
        self.tag = uuid.uuid4().hex[:6].upper()
        self.seq = 0

    def lot(self, name: str) -> str:
        return f"{name}-{self.tag}"

    async def post(self, *records: dict) -> None:
        numbered = []
        for i, r in enumerate(records):
            record = {
                **r,
                "seq": self.seq + i,
                "time": (T0 + timedelta(minutes=self.seq + i)).isoformat(),
            }
            if r["kind"] in ("object_event", "transformation_event"):
                record["event_id"] = f"{self.edge}-{self.seq + i}"
            numbered.append(record)
        self.seq += len(records)
        payload = json.dumps(
            {"edge_id": self.edge, "stream": "events", "epoch": "e", "records": numbered}
        ).encode()
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            outcome = await ingest(conn, topics.data(self.edge, "events"), payload)
        assert outcome.ack is not None, outcome.reason

    async def readings(
        self, device: str, tag: str, values: Sequence[tuple[str | None, float]]
    ) -> None:
        """Readings of `tag` on `device`, one a minute from T0, each bound to its batch (the
        name given, made this test's own) or to none, posted as the edge's readings stream."""
        records = [
            {
                "kind": "reading",
                "seq": i,
                "time": (T0 + timedelta(minutes=i)).isoformat(),
                "line": "line-1",
                "batch": batch and f"{batch}-{self.tag}",
                "device": device,
                "tag": tag,
                "value": value,
                "unit": "Cel",
            }
            for i, (batch, value) in enumerate(values)
        ]
        payload = json.dumps(
            {"edge_id": self.edge, "stream": "readings", "epoch": "e", "records": records}
        ).encode()
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            outcome = await ingest(conn, topics.data(self.edge, "readings"), payload)
        assert outcome.inserted == len(records), outcome

    def receipt(self, items: list[dict], po: str) -> dict:
        return {
            "kind": "object_event",
            "action": "OBSERVE",
            "biz_step": "receiving",
            "read_point": "dock-1",
            "biz_location": "dock-1",
            "items": items,
            "biz_transactions": [{"type": "po", "id": po}],
        }

    def shipment(self, items: list[dict], doc: str) -> dict:
        return {
            "kind": "object_event",
            "action": "OBSERVE",
            "biz_step": "shipping",
            "read_point": "dock-2",
            "biz_location": "dock-2",
            "items": items,
            "biz_transactions": [{"type": "desadv", "id": doc}],
        }

    def batch(self, batch: str, inputs: list[dict], outputs: list[dict], **extra: object) -> dict:
        return {
            "kind": "transformation_event",
            "transformation_id": batch,
            "read_point": "line-1",
            "line": "line-1",
            "batch": batch,
            "inputs": inputs,
            "outputs": outputs,
            "operators": ["OP-7"],
            **extra,
        }


@dataclass(frozen=True)
class Products:
    """The bakery's GTINs: the shared ones, or a test's own (a request by product then sees
    only that test's lots)."""

    flour: str = FLOUR_GTIN
    sugar: str = SUGAR_GTIN
    dough: str = DOUGH_GTIN
    bread: str = BREAD_GTIN
    cake: str = CAKE_GTIN


async def bake(
    p: Plant,
    products: Products = Products(),
    *,
    cake: bool = True,
    bread_shipments: Sequence[float] = (600,),
    rework: bool = False,
) -> None:
    """The bakery's events, as its edges send them: the receipt of flour and sugar (PO),
    B1 making dough, B2 bread (and B3 cake from half the dough and some sugar), the bread
    shipped as SH-1, SH-2, ... (then the cake's 100 of 400), and with `rework` a batch RW
    taking 10 bread back into the dough."""
    g = products
    flour, sugar, dough = p.lot("FLOUR"), p.lot("SUGAR"), p.lot("DOUGH")
    bread, made_cake = p.lot("BREAD"), p.lot("CAKE")
    records = [
        p.receipt(
            [lot_item(g.flour, flour, 1000, "KGM"), lot_item(g.sugar, sugar, 200, "KGM")],
            f"PO-{p.tag}",
        ),
        p.batch(
            f"B1-{p.tag}",
            [lot_item(g.flour, flour, 500, "KGM"), lot_item(g.sugar, sugar, 100, "KGM")],
            [lot_item(g.dough, dough, 600, "KGM")],
        ),
        p.batch(
            f"B2-{p.tag}",
            [lot_item(g.dough, dough, 300 if cake else 600, "KGM")],
            [lot_item(g.bread, bread, 600, "EA")],
        ),
    ]
    if cake:
        records.append(
            p.batch(
                f"B3-{p.tag}",
                [lot_item(g.dough, dough, 300, "KGM"), lot_item(g.sugar, sugar, 50, "KGM")],
                [lot_item(g.cake, made_cake, 400, "EA")],
            )
        )
    n = 0
    for n, quantity in enumerate(bread_shipments, 1):
        records.append(p.shipment([lot_item(g.bread, bread, quantity, "EA")], f"SH-{n}-{p.tag}"))
    if cake:
        records.append(p.shipment([lot_item(g.cake, made_cake, 100, "EA")], f"SH-{n + 1}-{p.tag}"))
    if rework:
        records.append(
            p.batch(
                f"RW-{p.tag}",
                [lot_item(g.bread, bread, 10, "EA")],
                [lot_item(g.dough, dough)],
            )
        )
    await p.post(*records)


@pytest.fixture
async def bakery(services: Services) -> Plant:
    p = Plant(services)
    await bake(p)
    return p


async def erp(collector: RunningCollector, p: Plant) -> None:
    """What the ERP says about the bakery: customers, shipments, the supplier, QC."""
    async with collector.client(Role.importer) as api:
        calls = [
            (
                "put",
                "/api/v1/erp/customers",
                [{"customer_id": f"C1-{p.tag}", "name": "Bakery Co", "address": "Main St"}],
            ),
            (
                "put",
                "/api/v1/erp/shipments",
                [
                    {
                        "shipment": f"SH-1-{p.tag}",
                        "order_id": f"SO-1-{p.tag}",
                        "customer_id": f"C1-{p.tag}",
                        "ship_to": "Bakery Co DC",
                        "carrier": "TruckCo",
                    }
                ],
            ),
            (
                "put",
                "/api/v1/erp/purchase-orders",
                [
                    {
                        "po": f"PO-{p.tag}",
                        "supplier": "Mill Ltd",
                        "supplier_lots": [
                            {
                                "gtin": FLOUR_GTIN,
                                "lot": p.lot("FLOUR"),
                                "supplier_lot": f"M-{p.tag}",
                            }
                        ],
                    }
                ],
            ),
            (
                "post",
                "/api/v1/qc-results",
                [
                    {
                        "batch_id": f"B1-{p.tag}",
                        "kind": "IPQC",
                        "check_name": "dough pH",
                        "value": 5.6,
                        "passed": True,
                        "inspector": "QA-1",
                        "time": T0.isoformat(),
                    }
                ],
            ),
        ]
        for method, path, body in calls:
            r = await api.request(method, path, json=body)
            assert r.status_code in (200, 201), r.text
        unknown = await api.post(
            "/api/v1/qc-results",
            json=[
                {
                    "gtin": FLOUR_GTIN,
                    "lot": "NOPE",
                    "kind": "FQC",
                    "check_name": "x",
                    "passed": False,
                    "time": T0.isoformat(),
                }
            ],
        )
        assert unknown.status_code == 422 and "unknown lot" in unknown.text
