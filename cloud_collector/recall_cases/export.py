"""A case's record as one file: JSON, or an XLSX workbook (the case, its customers, places,
members and actions, then the FSMA 204 sortable spreadsheet of every lot the case ever
held, its missing KDEs and what the columns mean: cloud_collector/fsma204). Both are built
whole before a byte is sent: an export is complete or is not one (a drill measures the
time to a complete one)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from cloud_collector.fsma204 import export as fsma_export
from cloud_collector.fsma204 import render
from cloud_collector.fsma204.kdes import Row, header
from cloud_collector.recall_cases.cases import ACTION_FIELDS, case_lot_ids
from cloud_collector.recall_cases.models import CaseRecord, KeptMember
from protocols.strict import Strict

_MEMBER_COLUMNS = [
    "kind",
    "key",
    "lot_id",
    "gtin",
    "lot_code",
    "shipment",
    "order_id",
    "customer_key",
    "customer",
    "place",
    "status",
    "quantity",
    "current_quantity",
    "uom",
    "found_at",
    "at_opening",
    "in_current",
]
_ACTION_COLUMNS = ["action_id", "kind", "at", "by", *ACTION_FIELDS, "detail"]


WHAT_IT_HOLDS = (
    "the recall case's record (sheets Case, Customers, Places, Members, Actions), then the "
    "21 CFR 1.1455(c)(3)(ii) electronic sortable spreadsheet of every lot the case holds or "
    "once held: the Key Data Elements of each Critical Tracking Event, one row per event per "
    "lot line, sorted by event date and time, then traceability lot code"
)


class CaseExport(Strict):
    """The JSON export: the case's record and its FSMA 204 spreadsheet, cells in column
    order (dates and times in `time_zone`)."""

    generated_at: datetime
    time_zone: str
    record: CaseRecord
    fsma204_columns: list[str]
    fsma204_rows: list[list[Any]]


async def _fsma_rows(conn: AsyncConnection, record: CaseRecord, zone: tzinfo) -> list[Row]:
    out: list[Row] = []
    async for chunk in fsma_export.rows(conn, case_lot_ids(record), zone=zone):
        out += chunk
    return out


def _when(value: datetime | None, zone: tzinfo) -> str | None:
    # Text, not a spreadsheet date: a workbook cell cannot carry a UTC offset.
    return None if value is None else value.astimezone(zone).isoformat(timespec="seconds")


def _totals(values: dict[str, float]) -> str:
    return "; ".join(f"{q:g} {uom}".strip() for uom, q in sorted(values.items()))


def _member_line(m: KeptMember, zone: tzinfo) -> list[Any]:
    values = m.model_dump()
    values["found_at"] = _when(m.found_at, zone)
    return [values[c] for c in _MEMBER_COLUMNS]


def _sheets(record: CaseRecord, zone: tzinfo) -> list[render.Sheet]:
    c = record.case
    about: list[list[Any]] = [
        ["Case", c.case_id],
        ["Title", c.title],
        ["Drill", "yes (mock recall)" if c.drill else "no"],
        ["State", c.state],
        ["Opened from", f"lot {c.gtin or '-'}/{c.lot_code}" if c.origin == "lot" else "condition"],
        ["Condition", None if c.condition is None else str(c.condition)],
        ["Opened by", c.opened_by],
        ["Opened at", _when(c.opened_at, zone)],
        ["Last recomputed", _when(c.checked_at, zone)],
        ["Closed by", c.closed_by],
        ["Closed at", _when(c.closed_at, zone)],
        ["Summary", c.summary],
        *[["Gap", g] for g in record.gaps],
    ]
    customers = [
        [
            x.customer_key,
            x.customer,
            ", ".join(x.shipments),
            _totals(x.shipped),
            "yes" if x.notified else "no",
            _when(x.last_notified_at, zone),
            _totals(x.returned),
            _when(x.found_at, zone),
        ]
        for x in record.customers
    ]
    places = [
        [
            p.place,
            ", ".join(p.lots),
            _totals(p.on_hand),
            _totals(p.current),
            _totals(p.held),
            _totals(p.destroyed),
        ]
        for p in record.places
    ]
    members = [_member_line(m, zone) for m in record.members]
    actions = [
        [
            *(
                _when(v, zone) if isinstance(v, datetime) else v
                for v in (a.action_id, a.kind, a.at, a.by, a.happened_at)
            ),
            a.customer_key,
            a.place,
            a.lot_id,
            a.quantity,
            a.uom,
            a.method,
            a.contact,
            a.note,
            str(a.detail) if a.detail else None,
        ]
        for a in record.actions
    ]
    return [
        ("Case", ["Item", "Value"], about),
        (
            "Customers",
            [
                "Customer",
                "Name",
                "Shipments",
                "Shipped",
                "Notified",
                "Last notified",
                "Returned",
                "Found",
            ],
            customers,
        ),
        (
            "Places",
            ["Place", "Lots", "On hand (found)", "On hand (now)", "Held", "Destroyed"],
            places,
        ),
        ("Members", _MEMBER_COLUMNS, members),
        ("Actions", _ACTION_COLUMNS, actions),
    ]


async def as_json(conn: AsyncConnection, record: CaseRecord, zone: ZoneInfo) -> CaseExport:
    rows = await _fsma_rows(conn, record, zone)
    return CaseExport(
        generated_at=datetime.now(UTC),
        time_zone=zone.key,
        record=record,
        fsma204_columns=header(zone.key),
        fsma204_rows=[r.cells for r in rows],
    )


async def as_xlsx(conn: AsyncConnection, record: CaseRecord, zone: ZoneInfo) -> tuple[bytes, int]:
    """The workbook, and how many FSMA 204 rows it holds."""
    rows = await _fsma_rows(conn, record, zone)

    async def chunks() -> Any:
        yield rows

    c = record.case
    about = [
        ("Request", f"recall case {c.case_id} ({c.title}): {len(case_lot_ids(record))} lots"),
        ("Generated (UTC)", datetime.now(UTC).isoformat(timespec="seconds")),
        ("Dates and times", f"in time zone {zone.key}"),
        ("What it holds", WHAT_IT_HOLDS),
    ]
    body = await render.xlsx(chunks(), header(zone.key), about, _sheets(record, zone))
    return body, len(rows)
