"""A plant to look at: the bakery of tests/cloud_collector/plant.py (supplier flour and
sugar, dough, bread, cake; shipments, a customer, QC), with its rework loop (bread back into
dough), an oven's temperature readings for the dough batch that leave their spec limits,
and a distributor (partner) that received the bread. Each call makes its own names."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import httpx
import psycopg

from cloud_collector import auth
from cloud_collector.auth import Role
from cloud_collector.ingest import ingest
from protocols.mqtt import topics
from tests.cloud_collector.plant import (
    T0,
    Plant,
    bake,
    erp,
)
from tests.conftest import RunningCollector, Services

OVEN_LOW, OVEN_HIGH = 170.0, 230.0
OVEN_READINGS = 240  # B1: one a minute for four hours: 240 chart points at one per bucket
HOT = range(100, 106)  # minutes of B1 at which the oven ran above its limit
CAKE_OVEN_READINGS = 120  # B3: two hours, a day later


@dataclass(frozen=True)
class Seeded:
    plant: Plant
    oven: str
    partner_key: str
    partner_id: str

    def lot(self, name: str) -> str:
        return self.plant.lot(name)

    def batch(self, name: str) -> str:
        return f"{name}-{self.plant.tag}"


async def seed(services: Services, collector: RunningCollector) -> Seeded:
    p = Plant(services)
    await bake(p, rework=True)
    await erp(collector, p)
    oven = f"oven-{p.tag}"
    specs = {
        "kind": "tag_specs",
        "seq": 0,
        "time": T0.isoformat(),
        "specs": [
            {
                "device": oven,
                "tag": "temperature",
                "unit": "Cel",
                "low": OVEN_LOW,
                "high": OVEN_HIGH,
            }
        ],
    }
    readings = [
        {
            "kind": "reading",
            "seq": i,
            "time": (T0 + timedelta(minutes=i)).isoformat(),
            "line": "line-1",
            "batch": f"B1-{p.tag}",
            "device": oven,
            "tag": "temperature",
            "value": 240.0 if i in HOT else 200.0 + (i % 10),
            "unit": "Cel",
        }
        for i in range(OVEN_READINGS)
    ] + [
        {
            "kind": "reading",
            "seq": OVEN_READINGS + i,
            "time": (T0 + timedelta(days=1, minutes=i)).isoformat(),
            "line": "line-1",
            "batch": f"B3-{p.tag}",
            "device": oven,
            "tag": "temperature",
            "value": 190.0 + (i % 7),
            "unit": "Cel",
        }
        for i in range(CAKE_OVEN_READINGS)
    ]
    async with await psycopg.AsyncConnection.connect(services.database_url, autocommit=True) as c:
        spec_edge = f"{p.edge}-specs"
        await ingest(
            c,
            topics.data(spec_edge, "events"),
            json.dumps(
                {"edge_id": spec_edge, "stream": "events", "epoch": "e", "records": [specs]}
            ).encode(),
        )
        outcome = await ingest(
            c,
            topics.data(p.edge, "readings"),
            json.dumps(
                {"edge_id": p.edge, "stream": "readings", "epoch": "e", "records": readings}
            ).encode(),
        )
        assert outcome.inserted == OVEN_READINGS + CAKE_OVEN_READINGS, outcome
        partner_id = f"DIST-{p.tag}"
        await auth.set_partner(c, partner_id, [f"C1-{p.tag}"], ["0614141000012"])
        issued = await auth.issue(c, f"dist-{uuid.uuid4().hex[:6]}", Role.partner, partner_id)
    return Seeded(p, oven, issued.key, partner_id)


@asynccontextmanager
async def signed_in(
    collector: RunningCollector, key: str, **headers: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client signed in to the pages with `key` (through the form, as a browser)."""
    async with httpx.AsyncClient(base_url=collector.api_url, headers=headers) as http:
        form = await http.get("/signin")
        token = form.text.split('name="form_token" value="', 1)[1].split('"', 1)[0]
        answer = await http.post("/signin", data={"key": key, "form_token": token, "next": "/"})
        assert answer.status_code == 303, answer.text
        yield http
