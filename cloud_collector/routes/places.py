"""Warehouse places and what lies at them (role reader): the place hierarchy
(cloud_collector/places.py), each lot's quantity per place and FIFO/FEFO picking advice
(cloud_collector/stock.py). `{place}` is a place's id or its SGLN; `{lot}` is what
trace.resolve takes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from cloud_collector import places, stock
from cloud_collector.endpoints import READ, Conn, resolve_lot
from protocols.strict import Strict

router = APIRouter(prefix="/api/v1", dependencies=READ, tags=["warehouse"])

Limit = Annotated[int, Query(ge=1, le=10_000)]


class PlaceAnswer(places.PlaceDetail):
    stock: list[stock.StockLine]  # what lies at it and inside it, per lot and place


class PickAdvice(Strict):
    place: str
    gtin: str
    rule: str  # FEFO when the first lot's expiry is known, else FIFO
    lots: list[stock.Advice]  # best first: pick the first


class LotPlaces(stock.LotStock):
    lot_id: int
    gtin: str
    lot_code: str


@router.get("/places")
async def list_places(
    conn: Conn,
    kind: places.Kind | None = None,
    within: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    limit: Limit = 1000,
) -> list[places.Place]:
    """The places of the hierarchy (those with a kind or a parent), by id; `within`: a
    place and everything inside it; `kind`: site, warehouse, zone, rack or bin."""
    if within is not None:
        within = await places.canonical(conn, within)
    return await places.places(conn, kind, within, limit)


# Before /places/{place}: a place id may hold slashes (a Digital Link), this suffix not.
@router.get("/places/{place:path}/pick-advice")
async def pick_advice(
    place: str,
    conn: Conn,
    gtin: Annotated[str, Query(pattern=r"^\d{14}$")],
    limit: Annotated[int, Query(ge=1, le=stock.MAX_ADVICE)] = 10,
) -> PickAdvice:
    """Which lot of the product to pick at the place (and all inside it): the soonest
    expiring first, lots of unknown expiry last, then the oldest; lots on hold are never
    advised. An empty list: no stock of it recorded there."""
    lots = await stock.advice(conn, place, gtin, limit)
    rule = "FEFO" if lots and lots[0].expiry is not None else "FIFO"
    return PickAdvice(place=await places.canonical(conn, place), gtin=gtin, rule=rule, lots=lots)


@router.get("/places/{place:path}")
async def show_place(place: str, conn: Conn) -> PlaceAnswer:
    """The place (by id or SGLN): what it is part of, what is directly in it, and every
    lot's quantity at it and inside it. 404 if no ERP import or master data described it."""
    found = await places.place(conn, place)
    if found is None:
        raise HTTPException(
            404,
            f"no place {place!r}: describe it with PUT /api/v1/erp/locations or EPCIS master "
            "data (a BusinessLocation)",
        )
    lines = await stock.place_stock(conn, found.place.location_id)
    return PlaceAnswer(**found.model_dump(), stock=lines)


@router.get("/lots/{lot:path}/places")
async def lot_places(lot: str, conn: Conn) -> LotPlaces:
    """Where the lot is: its quantity per place (`place` null: picked, not put anywhere
    yet), its serialized units' places, and its latest counts with their differences."""
    found = await resolve_lot(conn, lot)
    held = await stock.lot_stock(conn, found.lot_id)
    return LotPlaces(
        lot_id=found.lot_id, gtin=found.gtin, lot_code=found.lot_code, **held.model_dump()
    )
