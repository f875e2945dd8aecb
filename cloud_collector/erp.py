"""What comes from the ERP rather than from the floor: products, customers, who a shipment
went to, which supplier delivered a purchase order (and under which of their lot codes),
what the grower said of a harvested lot, and QC results. Each import is an idempotent
upsert, safe to repeat on every ERP sync."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from psycopg import AsyncConnection
from pydantic import BaseModel, Field, field_validator, model_validator

# The contract's test of text PostgreSQL can store: one definition for MQTT and HTTP.
from cloud_collector import places
from protocols import gs1
from protocols.mqtt.contract import storable
from protocols.strict import Strict


class ErpRow(Strict):
    """An ERP row: unknown fields refused, and text the database can store (no NUL, no lone
    surrogate), refused here with its field rather than by the database as a whole."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        return storable(value) if isinstance(value, str) else value


class Product(ErpRow):
    gtin: str = Field(pattern=r"^\d{14}$")
    name: str = Field(min_length=1, max_length=200)
    uom: str | None = Field(default=None, max_length=16)
    # Part of the FSMA 204 product description (21 CFR 1.1310): e.g. "25 kg", "bag".
    pack_size: str | None = Field(default=None, max_length=100)
    pack_style: str | None = Field(default=None, max_length=100)


class Customer(ErpRow):
    customer_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=500)


class Shipment(ErpRow):
    """A shipment document (the id a dock door is bound to) and its order and customer."""

    shipment: str = Field(min_length=1, max_length=128)
    order_id: str | None = Field(default=None, max_length=64)
    customer_id: str | None = Field(default=None, max_length=64)
    ship_to: str | None = Field(default=None, max_length=500)
    carrier: str | None = Field(default=None, max_length=128)


class PurchaseOrder(ErpRow):
    """Who delivered a purchase order; optionally the supplier's own code of a lot on it."""

    po: str = Field(min_length=1, max_length=128)
    supplier: str = Field(min_length=1, max_length=200)
    supplier_lots: list[SupplierLot] = Field(default_factory=list)


class SupplierLot(ErpRow):
    gtin: str = Field(pattern=r"^\d{14}$")
    lot: str = Field(min_length=1, max_length=20)
    supplier_lot: str = Field(min_length=1, max_length=64)


class QcResult(ErpRow):
    batch_id: str | None = Field(default=None, max_length=128)
    gtin: str | None = Field(default=None, pattern=r"^\d{14}$")
    lot: str | None = Field(default=None, max_length=20)
    kind: Literal["IPQC", "FQC", "incoming"]
    check_name: str = Field(min_length=1, max_length=128)
    value: float | None = None
    unit: str | None = Field(default=None, max_length=32)
    passed: bool
    inspector: str | None = Field(default=None, max_length=128)
    time: datetime


class Location(ErpRow):
    """A place as events and ERP documents name it (a read point, a supplier as its purchase
    orders name it, a ship-to as its shipments name it) and its FSMA 204 location
    description: business name, physical address, phone number (21 CFR 1.1310)."""

    location_id: str = Field(min_length=1, max_length=500)
    name: str = Field(min_length=1, max_length=200)
    address: str | None = Field(default=None, max_length=500)
    phone: str | None = Field(default=None, max_length=64)
    gln: str | None = Field(default=None, pattern=r"^\d{13}$")
    tlc_source_reference: str | None = Field(default=None, max_length=500)
    # Its transformations are initial packing (21 CFR 1.1330): a packing line, a packhouse.
    initial_packing: bool = False
    # A fishing vessel: our receipt from it is the first land-based receiving (§ 1.1335).
    fishing_vessel: bool = False
    # False for a supplier to whom 21 CFR Part 1 Subpart S does not apply: we assign the
    # traceability lot code of what we receive from it (§ 1.1345(b)).
    covered_by_rule: bool = True
    # A place of ours: cooling a harvest record places here is ours to record (§ 1.1325(b)).
    our_site: bool = False
    # Its place in the plant's hierarchy (cloud_collector/places.py): what kind of place it
    # is, which place it is part of, and the SGLN events may name it by.
    kind: places.Kind | None = None
    parent_id: str | None = Field(default=None, min_length=1, max_length=500)
    sgln: str | None = Field(default=None, max_length=500)

    @field_validator("sgln")
    @classmethod
    def _an_sgln(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = gs1.from_urn(value) if value.startswith("urn:") else gs1.from_digital_link(value)
        if key is None or key.kind != "sgln":
            raise ValueError(
                f"{value!r} is not an SGLN: write it as urn:epc:id:sgln:{{company}}.{{location}}"
                ".{extension} or a GS1 Digital Link /414/{gln}/254/{extension}"
            )
        return value

    @model_validator(mode="after")
    def _not_its_own_parent(self) -> Location:
        if self.parent_id is not None and self.parent_id == self.location_id:
            raise ValueError(f"place {self.location_id!r} cannot be its own parent_id")
        return self


class TlcSource(ErpRow):
    """Where a supplier's lot got its traceability lot code, as their shipping KDEs say:
    the place (a location_id) or a traceability lot code source reference, or both."""

    gtin: str = Field(pattern=r"^\d{14}$")
    lot_code: str = Field(min_length=1, max_length=20)
    location_id: str | None = Field(default=None, max_length=500)
    reference: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _location_or_reference(self) -> TlcSource:
        if self.location_id is None and self.reference is None:
            raise ValueError(
                f"TLC source of {self.gtin}/{self.lot_code} needs a location_id or a reference"
            )
        return self


class Harvest(ErpRow):
    """What the grower said of a harvested lot (a raw agricultural commodity) we initially
    pack: the harvest and cooling KDEs of 21 CFR 1.1330(a). The lot is named as our receipts
    name it (gtin empty when the bins carry none); places are location_ids of
    PUT /api/v1/erp/locations. Cooling only if the food was cooled before packing."""

    gtin: str = Field(default="", pattern=r"^(\d{14})?$")
    lot_code: str = Field(min_length=1, max_length=20)
    commodity: str = Field(min_length=1, max_length=200)
    variety: str | None = Field(default=None, max_length=200)
    farm: str | None = Field(default=None, max_length=500)
    growing_area: str | None = Field(default=None, max_length=200)
    harvester: str | None = Field(default=None, max_length=500)
    harvest_date: date | None = None
    cooling_location: str | None = Field(default=None, max_length=500)
    cooling_date: date | None = None
    # A fishing trip's last day of harvesting (its first: harvest_date), § 1.1335(d).
    harvest_end_date: date | None = None


PurchaseOrder.model_rebuild()


# Table -> its key column(s); the other columns are the model's fields, in order.
_KEYS: dict[str, str] = {
    "products": "gtin",
    "customers": "customer_id",
    "shipments": "shipment",
    "locations": "location_id",
    "lot_tlc_sources": "gtin, lot_code",
    "harvests": "gtin, lot_code",
}


# Tables EPCIS master data also describes (cloud_collector/epcis/master_data.py): the ERP's
# row wins, and says so by clearing where a description captured before came from.
_PROVENANCE: dict[str, str] = {
    "products": ", capture_id = null, partner_id = null",
    "locations": ", capture_id = null, partner_id = null",
}


def _upsert(table: str) -> Any:
    async def run(conn: AsyncConnection, rows: list[BaseModel]) -> int:
        if not rows:
            return 0
        columns = list(type(rows[0]).model_fields)
        keys = _KEYS[table].split(", ")
        others = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
        others += _PROVENANCE.get(table, "")
        placeholders = ", ".join(["%s"] * len(columns))
        sql = (
            f"insert into {table} ({', '.join(columns)}) values ({placeholders})"
            f" on conflict ({_KEYS[table]}) do update set {others}"
        )
        async with conn.cursor() as cur:
            await cur.executemany(sql, [tuple(getattr(r, c) for c in columns) for r in rows])
        return len(rows)

    return run


products = _upsert("products")
customers = _upsert("customers")
shipments = _upsert("shipments")
locations = _upsert("locations")
tlc_sources = _upsert("lot_tlc_sources")
harvests = _upsert("harvests")


async def purchase_orders(conn: AsyncConnection, rows: list[PurchaseOrder]) -> int:
    async with conn.cursor() as cur:
        for po in rows:
            await cur.execute(
                "update receipts set supplier = %s where document = %s", (po.supplier, po.po)
            )
            await cur.execute(
                "update lots set supplier = %s, origin = 'supplier' where lot_id in"
                " (select lot_id from receipts where document = %s and lot_id is not null)",
                (po.supplier, po.po),
            )
            for s in po.supplier_lots:
                await cur.execute(
                    "insert into lots (gtin, lot_code, origin, supplier, supplier_lot)"
                    " values (%s, %s, 'supplier', %s, %s) on conflict (gtin, lot_code) do update"
                    " set supplier = excluded.supplier, supplier_lot = excluded.supplier_lot",
                    (s.gtin, s.lot, po.supplier, s.supplier_lot),
                )
    return len(rows)


class UnknownReference(ValueError):
    pass


async def qc_results(conn: AsyncConnection, rows: list[QcResult]) -> int:
    async with conn.cursor() as cur:
        for q in rows:
            lot_id = None
            if q.gtin is not None and q.lot is not None:
                await cur.execute(
                    "select lot_id from lots where gtin = %s and lot_code = %s", (q.gtin, q.lot)
                )
                row = await cur.fetchone()
                if row is None:
                    raise UnknownReference(f"QC result for unknown lot {q.gtin}/{q.lot}")
                lot_id = row[0]
            elif q.batch_id is None:
                raise UnknownReference(
                    f"QC result {q.check_name!r} names neither a batch nor a lot (gtin + lot)"
                )
            await cur.execute(
                "insert into qc_results (batch_id, lot_id, kind, check_name, value, unit,"
                " passed, inspector, time) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    q.batch_id,
                    lot_id,
                    q.kind,
                    q.check_name,
                    q.value,
                    q.unit,
                    q.passed,
                    q.inspector,
                    q.time,
                ),
            )
    return len(rows)
