"""The Key Data Elements of each Critical Tracking Event, one spreadsheet row per event per
lot line, and the KDEs the records lack.

Where the column names come from: the rule itself, 21 CFR Part 1 Subpart S, in its own
words, one column per KDE (`COLUMNS` cites the paragraph of each):

- Receiving, § 1.1345(a)(1)-(8); Shipping, § 1.1340(a)(1)-(8); Transformation,
  § 1.1350(a)(1)(i)-(iii) for the food used and (a)(2)(i)-(vi) for the food produced;
  Initial packing of a raw agricultural commodity, § 1.1330(a)(1)-(16): the food received
  (commodity, variety, its receipt, the grower's harvest and cooling records) and the food
  packed (the traceability lot code assigned, its description, quantity, place and date).
- "Location description" is the rule's defined term (§ 1.1310: business name, phone number,
  physical location address); "quantity and unit of measure" is split into "Quantity" and
  "Unit of Measure" so the sheet sorts and sums; the date KDEs of the events (the date you
  received the food, the date you shipped it, the date transformation was completed, the
  date of initial packing) share one sortable "Event Date" column, the row's "Critical
  Tracking Event" saying which it is.

The FDA's own electronic sortable spreadsheet template (June 2024,
https://www.fda.gov/media/179617/download, one tab per CTE whose headers are the same KDEs)
could not be read from here: where its header text differs from the rule's words, change
the names in `COLUMNS`, nothing else depends on them.

Initial packing rows: a batch whose inputs are harvested lots (the grower's harvest record
is known: PUT /api/v1/erp/harvests) or that ran at a place flagged `initial_packing` (PUT
/api/v1/erp/locations) assigns the first traceability lot code: a row per lot packed per
lot harvested, the harvest and cooling KDEs from the grower's record, the receipt's date and
quantity from our dock. The receipt itself is then no receiving CTE (§ 1.1345(c)).

Columns that are not KDEs (GTIN, the lot code of the food received for initial packing,
event time, event id, missing KDEs) come last but one (time second, to sort the events of
one day) and say so in `COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

# Which CTE a row holds, by the row kind of fsma204/sql.py.
RECEIVING, SHIPPING, FOOD_USED, FOOD_PRODUCED, INITIAL_PACKING = 1, 2, 3, 4, 5
RECEIVING_UNCOVERED, FIRST_LAND_RECEIVING, COOLING = 6, 7, 8
CTE_NAMES = {
    RECEIVING: "Receiving",
    SHIPPING: "Shipping",
    FOOD_USED: "Transformation (food used)",
    FOOD_PRODUCED: "Transformation (food produced)",
    INITIAL_PACKING: "Initial Packing",
    RECEIVING_UNCOVERED: "Receiving (from a person the rule does not apply to)",
    FIRST_LAND_RECEIVING: "First Land-Based Receiving",
    COOLING: "Cooling (before initial packing)",
}
# Receipts whose traceability lot code we assign (§ 1.1345(b), § 1.1335(a)).
RECEIVER_ASSIGNED = (RECEIVING_UNCOVERED, FIRST_LAND_RECEIVING)

CTE = "Critical Tracking Event"
DATE = "Event Date"  # headed "Event Date (ZONE)": see header()
TIME = "Event Time"  # headed "Event Time (ZONE)"
TLC = "Traceability Lot Code"
SUPPLIER_TLC = "Traceability Lot Code Assigned by the Supplier"
PRODUCT = "Product Description"
QUANTITY = "Quantity"
UOM = "Unit of Measure"
PREVIOUS_SOURCE = "Location Description for the Immediate Previous Source"
RECEIVED_AT = "Location Description for Where the Food Was Received"
RECIPIENT = "Location Description for the Immediate Subsequent Recipient"
SHIPPED_FROM = "Location Description for the Location From Which You Shipped the Food"
TLC_SOURCE = "Location Description for the Traceability Lot Code Source"
TLC_SOURCE_REFERENCE = "Traceability Lot Code Source Reference"
NEW_TLC = "New Traceability Lot Code"
DOCUMENT_TYPE = "Reference Document Type"
DOCUMENT_NUMBER = "Reference Document Number"
COMMODITY = "Commodity"
VARIETY = "Variety"
DATE_RECEIVED = "Date You Received the Food"
QUANTITY_RECEIVED = "Quantity of the Food Received"
UOM_RECEIVED = "Unit of Measure of the Food Received"
FARM = "Location Description for the Farm Where the Food Was Harvested"
GROWING_AREA = "Name of the Field, Growing Area or Container"
HARVESTER = "Business Name and Phone Number for the Harvester"
HARVEST_DATE = "Date of Harvesting"
COOLED_AT = "Location Description for Where the Food Was Cooled"
COOLING_DATE = "Date of Cooling"
TRIP = "Harvest Date Range and Locations for the Trip"
GTIN = "GTIN"
LOT_RECEIVED = "Lot Code of the Food Received"
UNITS = "Unit IDs"
EVENT_ID = "Event ID"
MISSING = "Missing KDEs"

# Column -> where it comes from. The order is the spreadsheet's.
COLUMNS: dict[str, str] = {
    CTE: "which CTE's KDEs the row holds: receiving (§ 1.1345(a)), receiving from a person "
    "to whom the rule does not apply (§ 1.1345(b): its supplier flagged covered_by_rule "
    "false), first land-based receiving of food from a fishing vessel (§ 1.1335: its "
    "supplier flagged fishing_vessel), shipping (§ 1.1340), transformation (§ 1.1350), the "
    "food used or the food produced, cooling before initial packing done at a site of ours "
    "(§ 1.1325(b): the grower's record names a cooling place flagged our_site), initial "
    "packing of a raw agricultural commodity (§ 1.1330)",
    DATE: "§ 1.1345(a)(6), (b)(6) the date you received the food; § 1.1335(f) the date the "
    "food was received (landed); § 1.1325(b)(1)(v) the date of cooling; § 1.1340(a)(6) the "
    "date you shipped the food; § 1.1350(a)(2)(iii) the date transformation was completed; "
    "§ 1.1330(a)(15) the date of initial packing (in the time zone its header names, that of "
    "the request: ?tz=, UTC unless asked)",
    TIME: "not a KDE: the event's time of day in the time zone of the request (?tz=, UTC "
    "unless asked), to sort the events of one day",
    TLC: "§ 1.1345(a)(1), § 1.1340(a)(1) the traceability lot code for the food; "
    "§ 1.1350(a)(1)(i) of the food used, (a)(2)(i) the new traceability lot code; "
    "§ 1.1330(a)(11) the traceability lot code you assigned (to the food packed); "
    "§ 1.1345(b)(1), § 1.1335(a) the traceability lot code you assigned on receipt; on "
    "cooling rows the lot as our receipt names it (no code is assigned before initial "
    "packing); as our records keep it (one row per event per lot: its units summed)",
    SUPPLIER_TLC: "§ 1.1345(a)(1) on receiving rows, where it differs from the lot code our "
    "records keep: the traceability lot code as the supplier (the traceability lot code "
    "source) assigned it",
    PRODUCT: "§ 1.1345(a)(3), (b)(3), § 1.1340(a)(3), § 1.1350(a)(1)(ii), (a)(2)(iv) the "
    "product description for the food; § 1.1330(a)(12) of the packed food; § 1.1335(b) for "
    "packaged food: the product's name, packaging size and style (§ 1.1310), as the ERP's "
    "products give them",
    QUANTITY: "§ 1.1345(a)(2), (b)(2), § 1.1335(c), § 1.1325(b)(1)(iii), § 1.1340(a)(2), "
    "§ 1.1350(a)(1)(iii), (a)(2)(v) the quantity (and unit of measure) of the food: the sum "
    "of the event's units and lines of the lot; for food used, the quantity used from that "
    "lot; for food produced, the quantity the event made of it; § 1.1330(a)(13) of the packed"
    " food, given once per lot packed (on its first row: its other rows list further lots "
    "harvested); quantities in different units are never added (the row says what was "
    "recorded)",
    UOM: "the unit of measure of the quantity (same paragraphs)",
    PREVIOUS_SOURCE: "§ 1.1345(a)(4), (b)(4) the location description for the immediate "
    "previous source (other than a transporter) for the food; on first land-based receiving "
    "rows the vessel, where known (not a KDE of § 1.1335)",
    RECEIVED_AT: "§ 1.1345(a)(5), (b)(5) the location description for where the food was "
    "received; § 1.1335(e) for the first land-based receiver",
    RECIPIENT: "§ 1.1340(a)(4) the location description for the immediate subsequent "
    "recipient (other than a transporter) of the food; § 1.1325(b)(1)(i) on cooling rows, "
    "the initial packer (where the lot was packed)",
    SHIPPED_FROM: "§ 1.1340(a)(5) the location description for the location from which you "
    "shipped the food",
    TLC_SOURCE: "§ 1.1345(a)(7), § 1.1340(a)(7) the location description for the "
    "traceability lot code source; § 1.1350(a)(2)(ii) where you transformed the food; "
    "§ 1.1330(a)(14) where you initially packed the food; on receipts whose code we "
    "assigned (§ 1.1345(b), § 1.1335), where we received it (§ 1.1320)",
    TLC_SOURCE_REFERENCE: "the same paragraphs: the traceability lot code source reference "
    "(may stand in for the location description)",
    NEW_TLC: "§ 1.1350(a)(2)(i) on rows of food used: the new traceability lot code(s) the "
    "lot went into",
    DOCUMENT_TYPE: "§ 1.1345(a)(8), (b)(7), § 1.1335(g), § 1.1325(b)(1)(vii), § 1.1340(a)(8), "
    "§ 1.1350(a)(2)(vi), § 1.1330(a)(16) the reference document type (several: '; ')",
    DOCUMENT_NUMBER: "the reference document number, in the order of the types",
    COMMODITY: "§ 1.1330(a)(1) on initial packing rows: the commodity of the food received "
    "(the grower's harvest record); § 1.1325(b)(1)(ii) on cooling rows; § 1.1335(b) on first "
    "land-based receiving rows, the species or acceptable market name (the harvest record)",
    VARIETY: "§ 1.1330(a)(1) the variety of the food received, if applicable",
    DATE_RECEIVED: "§ 1.1330(a)(2) on initial packing rows: the date you received the food "
    "harvested (its first receipt, in the time zone of the time column); receiving rows have "
    "it as their Event Date",
    QUANTITY_RECEIVED: "§ 1.1330(a)(3) the quantity (and unit of measure) of the food "
    "received, as its receipts recorded it",
    UOM_RECEIVED: "§ 1.1330(a)(3) the unit of measure of the food received",
    FARM: "§ 1.1330(a)(4), § 1.1325(b)(1)(vi) the location description for the farm where "
    "the food was harvested",
    GROWING_AREA: "§ 1.1330(a)(5) for produce, the name of the field or other growing area "
    "(as the grower names it); (a)(6) for aquacultured food, the name of the container",
    HARVESTER: "§ 1.1330(a)(7) the business name and phone number for the harvester",
    HARVEST_DATE: "§ 1.1330(a)(8) the date of harvesting (the grower's date)",
    COOLED_AT: "§ 1.1330(a)(9), § 1.1325(b)(1)(iv) the location description for where the "
    "food was cooled (if it was cooled before packing)",
    COOLING_DATE: "§ 1.1330(a)(10), § 1.1325(b)(1)(v) the date of cooling (if applicable)",
    TRIP: "§ 1.1335(d) the harvest date range and locations (NMFS ocean coordinates or "
    "another description of the harvest location) for the trip during which the food was "
    "caught: the harvest record's harvest_date to harvest_end_date, and its growing_area",
    GTIN: "not a KDE: the GS1 trade item of the lot",
    LOT_RECEIVED: "not a KDE: on initial packing rows, the lot harvested and received that "
    "went into the packed lot (the grower's record is about it)",
    UNITS: "not a KDE: the units (pallet SSCC, case SGTIN, tag EPC) of the lot the event "
    "recorded, whose quantities the row sums",
    EVENT_ID: "not a KDE: the rows of one event share it",
    MISSING: "not a KDE: which of the row's KDEs the records lack, and what to import",
}

# CBV business transaction types (trace event documents) in the words of a reference
# document type.
DOCUMENT_TYPES = {
    "po": "Purchase Order",
    "desadv": "Despatch Advice",
    "inv": "Invoice",
    "bol": "Bill of Lading",
    "prodorder": "Production Order",
    "recadv": "Receiving Advice",
}
LOCATIONS_IMPORT = "PUT /api/v1/erp/locations"
HARVESTS_IMPORT = "PUT /api/v1/erp/harvests"
NO_PLACE = "the event names no read point or business location"


# Location id -> its row of the locations table (master data, read once per spreadsheet).
Places = Mapping[str | None, dict[str, Any]]


@dataclass(frozen=True)
class Missing:
    """A KDE the records lack for one row, and what would supply it."""

    kde: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kde}: {self.detail}"


@dataclass
class Row:
    values: dict[str, Any]
    missing: list[Missing] = field(default_factory=list)

    @property
    def cells(self) -> list[Any]:
        """Typed cells in column order: dates as dates, quantities as numbers."""
        return [self.values.get(c) for c in COLUMNS]


def describe(loc: dict[str, Any] | None) -> str | None:
    """A location description: business name, physical address, phone number."""
    if not loc:
        return None
    return ", ".join(x for x in (loc.get("name"), loc.get("address"), loc.get("phone")) if x)


def _parts_missing(loc: dict[str, Any]) -> list[str]:
    return [
        p for p, k in (("physical address", "address"), ("phone number", "phone")) if not loc.get(k)
    ]


def _place(
    row: Row, column: str, key: str | None, loc: dict[str, Any] | None, unknown: str
) -> None:
    """Fill a location description column, or say what is missing: the place itself
    (`unknown` says why), its master data, or part of it."""
    row.values[column] = describe(loc)
    if key is None:
        row.missing.append(Missing(column, unknown))
    elif loc is None:
        row.missing.append(Missing(column, f"no location {key!r}: {LOCATIONS_IMPORT}"))
    elif parts := _parts_missing(loc):
        row.missing.append(
            Missing(column, f"location {key!r} has no {' or '.join(parts)}: {LOCATIONS_IMPORT}")
        )


def _recipient(row: Row, r: dict[str, Any], places: Places) -> None:
    """The place the food was shipped to. A customer's record (a billing address, short of
    the place) never stands in for it: the row names what the ERP knows and what is missing."""
    key = r["ship_to"] or r["customer_id"]
    loc = places.get(r["ship_to"]) or places.get(r["customer_id"])
    if loc is None and r["ship_to"] is None and r["customer"] is not None:
        known = describe({"name": r["customer"], "address": r["customer_address"]})
        row.values[RECIPIENT] = None
        row.missing.append(
            Missing(
                RECIPIENT,
                f"only customer {r['customer_id']!r}'s record is known ({known}), not the "
                f"place shipment {r['shipment']!r} went to: give the shipment a ship_to "
                f"(PUT /api/v1/erp/shipments) and describe it ({LOCATIONS_IMPORT})",
            )
        )
        return
    unknown = (
        "the event names no shipment document"
        if r["shipment"] is None
        else f"the ERP has not said whom shipment {r['shipment']!r} went to: "
        "PUT /api/v1/erp/shipments"
    )
    _place(row, RECIPIENT, key, loc, unknown)


def _tlc_source(row: Row, r: dict[str, Any], kind: int, places: Places) -> None:
    """The place that assigned the lot's code: the supplier's word for a lot we received
    (lot_tlc_sources), the place of the transformation for a lot we made."""
    if r["tlc_location_id"] is not None or r["tlc_reference"] is not None:
        key, reference = r["tlc_location_id"], r["tlc_reference"]
        loc = places.get(key)
    elif kind in (FOOD_PRODUCED, INITIAL_PACKING) or r["made_by"] is not None:
        key = r["place"] if kind in (FOOD_PRODUCED, INITIAL_PACKING) else r["made_at"]
        loc = places.get(key)
        reference = loc.get("tlc_source_reference") if loc else None
    else:
        key, loc, reference = None, None, None
    row.values[TLC_SOURCE_REFERENCE] = reference
    if reference is not None:  # the reference may stand in for the description
        row.values[TLC_SOURCE] = describe(loc)
        return
    if r["made_by"] is not None:
        unknown = f"batch {r['made_by']!r} made it, but its transformation event never arrived"
    else:
        unknown = (
            f"the supplier has not said where lot {r['lot_code']!r} got its code: "
            "PUT /api/v1/erp/tlc-sources"
        )
    _place(row, TLC_SOURCE, key, loc, unknown)


def _documents(row: Row, r: dict[str, Any], kind: int) -> None:
    documents = [(DOCUMENT_TYPES.get(t, t), i) for t, i in (r["documents"] or [])]
    if kind == SHIPPING and r["order_id"]:
        documents.append(("Sales Order", r["order_id"]))
    if kind in (FOOD_PRODUCED, INITIAL_PACKING) and not documents and _batch_record(r):
        documents.append(("Batch Record", r["batch"]))
    if documents:
        row.values[DOCUMENT_TYPE] = "; ".join(t for t, _ in documents)
        row.values[DOCUMENT_NUMBER] = "; ".join(i for _, i in documents)
    else:
        row.missing.append(Missing(DOCUMENT_NUMBER, "the event names no business document"))


def _batch_record(r: dict[str, Any]) -> bool:
    """A batch of our own lines has its record here (its readings, operators, QC) under its
    id; a captured event's batch is a record only when its sender named it (an EPCIS
    transformationID), never when its id stands in for a missing one (its event id)."""
    batch, edge = r["batch"], r["batch_edge"]
    if batch is None or edge is None:
        return False
    return not edge.startswith("epcis") or batch != r["event_id"]


def _quantity(row: Row, r: dict[str, Any], kind: int) -> None:
    """The row's quantity is a sum: say when it is not one (several units of measure), when
    it covers only some units, or when nothing recorded one."""
    if r["mixed"] is not None:
        why = f"recorded in several units of measure ({r['mixed']}): not added"
        row.missing += [Missing(QUANTITY, why), Missing(UOM, why)]
        return
    if kind == INITIAL_PACKING and not r["first_of_lot"]:
        return  # given once per lot packed, on its first row
    if r["quantity"] is None:
        row.missing.append(Missing(QUANTITY, "the event recorded no quantity"))
    elif r["unquantified"]:
        row.missing.append(
            Missing(
                QUANTITY,
                f"{r['unquantified']} of the {r['items']} units or lines of the lot recorded no "
                "quantity: the sum covers the others",
            )
        )
    if r["uom"] is None:
        row.missing.append(Missing(UOM, "the event recorded no unit of measure"))


def _harvest(row: Row, r: dict[str, Any], places: Places, zone: tzinfo) -> None:
    """The KDEs of the food received for initial packing: its receipt at our dock, and what
    the grower's harvest record says (or which of them nothing supplied)."""
    lot = r["used_lot_code"]
    row.values[LOT_RECEIVED] = lot
    if r["received"] is None:
        for column in (DATE_RECEIVED, QUANTITY_RECEIVED, UOM_RECEIVED):
            row.missing.append(Missing(column, f"no receipt of lot {lot!r} was recorded"))
    else:
        row.values[DATE_RECEIVED] = r["received"].astimezone(zone).date()
        row.values[QUANTITY_RECEIVED] = _number(r["quantity_received"])
        row.values[UOM_RECEIVED] = r["uom_received"]
        if r["quantity_received"] is None or r["uom_received"] is None:
            why = f"the receipts of lot {lot!r} give no quantity in one unit"
            row.missing += [Missing(QUANTITY_RECEIVED, why), Missing(UOM_RECEIVED, why)]
    if r["commodity"] is None:  # the one fact every harvest record has
        why = f"no harvest record of lot {lot!r}: {HARVESTS_IMPORT}"
        row.missing += [Missing(c, why) for c in (COMMODITY, FARM, GROWING_AREA, HARVESTER)]
        row.missing += [
            Missing(HARVEST_DATE, why),
            Missing(COOLED_AT, f"{why} (if it was cooled before packing)"),
        ]
        return
    record = f"the harvest record of lot {lot!r}"
    row.values |= {
        COMMODITY: r["commodity"],
        VARIETY: r["variety"],
        GROWING_AREA: r["growing_area"],
        HARVEST_DATE: r["harvest_date"],
        COOLING_DATE: r["cooling_date"],
    }
    farm = r["farm"]
    _place(row, FARM, farm, places.get(farm), f"{record} names no farm: {HARVESTS_IMPORT}")
    if r["growing_area"] is None:
        row.missing.append(
            Missing(
                GROWING_AREA,
                f"{record} names no field, growing area or container (required for produce "
                f"and aquacultured food): {HARVESTS_IMPORT}",
            )
        )
    _harvester(row, r["harvester"], places, record)
    if r["harvest_date"] is None:
        row.missing.append(Missing(HARVEST_DATE, f"{record} has no date: {HARVESTS_IMPORT}"))
    cooler = r["cooling_location"]
    if cooler is not None or r["cooling_date"] is not None:  # cooled: both are KDEs
        unknown = f"{record} says when the food was cooled, not where: {HARVESTS_IMPORT}"
        _place(row, COOLED_AT, cooler, places.get(cooler), unknown)
        if r["cooling_date"] is None:
            row.missing.append(
                Missing(
                    COOLING_DATE,
                    f"{record} says where the food was cooled, not when: {HARVESTS_IMPORT}",
                )
            )


def _harvester(row: Row, key: str | None, places: Places, record: str) -> None:
    """Business name and phone number (not the address: the KDE asks for these two)."""
    loc = places.get(key)
    if loc is not None:
        row.values[HARVESTER] = ", ".join(x for x in (loc.get("name"), loc.get("phone")) if x)
    if key is None:
        row.missing.append(Missing(HARVESTER, f"{record} names no harvester: {HARVESTS_IMPORT}"))
    elif loc is None:
        row.missing.append(Missing(HARVESTER, f"no location {key!r}: {LOCATIONS_IMPORT}"))
    elif not loc.get("phone"):
        row.missing.append(
            Missing(HARVESTER, f"location {key!r} has no phone number: {LOCATIONS_IMPORT}")
        )


def _number(value: float | None) -> int | float | None:
    """Whole quantities as integers: '1000', not '1000.0', in the CSV."""
    if value is not None and float(value).is_integer():
        return int(value)
    return value


def _product(r: dict[str, Any]) -> str | None:
    """The product description: its name, packaging size and style (§ 1.1310)."""
    if r["product"] is None:
        return None
    pack = " ".join(x for x in (r["pack_size"], r["pack_style"]) if x)
    return f"{r['product']}, {pack}" if pack else str(r["product"])


def _catch(row: Row, r: dict[str, Any], places: Places) -> None:
    """First land-based receiving (§ 1.1335): the species or market name and the trip's
    harvest dates and place, from the harvest record of the lot landed."""
    lot, why = r["lot_code"], f"no harvest record of lot {r['lot_code']!r}: {HARVESTS_IMPORT}"
    if r["commodity"] is None:
        if r["product"] is None:
            row.missing.append(Missing(COMMODITY, f"species or acceptable market name: {why}"))
        row.missing.append(Missing(TRIP, why))
        return
    row.values[COMMODITY] = r["commodity"]
    first, last, area = r["harvest_date"], r["harvest_end_date"] or r["harvest_date"], None
    area = r["growing_area"]
    if first is None or area is None:
        absent = " and ".join(x for x, v in (("dates", first), ("location", area)) if v is None)
        row.missing.append(
            Missing(TRIP, f"the harvest record of lot {lot!r} has no {absent}: {HARVESTS_IMPORT}")
        )
    dates = f"{first} to {last}" if first is not None and last != first else str(first or "")
    row.values[TRIP] = ", ".join(x for x in (dates, area) if x) or None


def _cooling(row: Row, r: dict[str, Any], places: Places) -> None:
    """Cooling before initial packing done at a site of ours (§ 1.1325(b)): what the
    grower's record says of the lot, where we cooled it, and who packed it after."""
    row.values |= {COMMODITY: r["commodity"], VARIETY: r["variety"]}
    row.values[COOLING_DATE] = r["cooling_date"]
    cooler = r["place"]
    _place(row, COOLED_AT, cooler, places.get(cooler), NO_PLACE)
    farm, record = r["farm"], f"the harvest record of lot {r['lot_code']!r}"
    _place(row, FARM, farm, places.get(farm), f"{record} names no farm: {HARVESTS_IMPORT}")
    packer = r["recipient"]
    unpacked = f"lot {r['lot_code']!r} has not been packed yet: its initial packer is unknown"
    _place(row, RECIPIENT, packer, places.get(packer), unpacked)


def header(zone: str = "UTC") -> list[str]:
    """The column names, the date and time columns saying their time zone ("the date you
    received the food" is a local date: a reader must know whose)."""
    return [f"{c} ({zone})" if c in (DATE, TIME) else c for c in COLUMNS]


def build(r: dict[str, Any], places: Places, zone: tzinfo = UTC) -> Row:
    """One spreadsheet row from one row of fsma204/sql.py CTE_ROWS, its date and time in
    `zone` (the plant's, usually: "the date you received the food" is a local date)."""
    kind: int = r["kind"]
    at: datetime = r["time"].astimezone(zone)
    row = Row(
        {
            CTE: CTE_NAMES[kind],
            # Cooling is known by its day only (the grower's record): no time of day.
            DATE: r["cooling_date"] if kind == COOLING else at.date(),
            TIME: None if kind == COOLING else time(at.hour, at.minute, at.second),
            TLC: r["lot_code"],
            PRODUCT: _product(r),
            QUANTITY: _number(r["quantity"]),
            UOM: r["uom"],
            GTIN: r["gtin"] or None,
            UNITS: r["units"],
            EVENT_ID: r["event_id"],
        }
    )
    if kind == INITIAL_PACKING and not r["first_of_lot"]:
        row.values[UOM] = None  # the quantity packed is on the lot's first row
    if r["lot_code"].startswith("unit:"):
        row.missing.append(Missing(TLC, "a unit no label or event tied to a lot"))
    if r["product"] is None and kind not in (COOLING, FIRST_LAND_RECEIVING):
        row.missing.append(
            Missing(PRODUCT, f"no product {r['gtin']}: PUT /api/v1/erp/products")
            if r["gtin"]
            else Missing(PRODUCT, f"lot {r['lot_code']!r} names no GTIN")
        )
    elif r["product"] is not None and kind != COOLING:
        absent = [x for x, k in (("pack size", "pack_size"), ("pack style", "pack_style"))
                  if not r[k]]  # fmt: skip
        if absent:
            row.missing.append(
                Missing(
                    PRODUCT,
                    f"product {r['gtin']} has no {' or '.join(absent)} (part of the product "
                    "description): PUT /api/v1/erp/products",
                )
            )
    _quantity(row, r, kind)
    if kind in (RECEIVING, RECEIVING_UNCOVERED, FIRST_LAND_RECEIVING):
        if r["supplier_lot"] is not None and r["supplier_lot"] != r["lot_code"]:
            row.values[SUPPLIER_TLC] = r["supplier_lot"]
        unknown = (
            f"no supplier is known for purchase order {r['document']!r}: "
            "PUT /api/v1/erp/purchase-orders"
            if r["document"]
            else "the receipt names no purchase order, so no supplier"
        )
        if kind == FIRST_LAND_RECEIVING:  # the vessel, if known: no KDE of § 1.1335
            row.values[PREVIOUS_SOURCE] = describe(places.get(r["source"]))
            _catch(row, r, places)
        else:
            _place(row, PREVIOUS_SOURCE, r["source"], places.get(r["source"]), unknown)
        _place(row, RECEIVED_AT, r["place"], places.get(r["place"]), NO_PLACE)
    elif kind == COOLING:
        _cooling(row, r, places)
    elif kind == SHIPPING:
        _recipient(row, r, places)
        _place(row, SHIPPED_FROM, r["place"], places.get(r["place"]), NO_PLACE)
    elif kind == INITIAL_PACKING:
        _harvest(row, r, places, zone)
    if kind == FOOD_USED:
        # The food used has no location, source or document KDEs of its own: the new lot has.
        row.values[NEW_TLC] = r["new_lots"]
    elif kind == COOLING:
        _documents(row, r, kind)  # no code is assigned before initial packing: no TLC source
    elif kind in RECEIVER_ASSIGNED:
        # We assigned its code on receipt (§ 1.1320): we are its source, where we received it.
        loc = places.get(r["place"])
        row.values[TLC_SOURCE_REFERENCE] = loc.get("tlc_source_reference") if loc else None
        if row.values[TLC_SOURCE_REFERENCE] is not None:
            row.values[TLC_SOURCE] = describe(loc)
        else:
            _place(row, TLC_SOURCE, r["place"], loc, NO_PLACE)
        _documents(row, r, kind)
    else:
        _tlc_source(row, r, kind, places)
        _documents(row, r, kind)
    row.values[MISSING] = "; ".join(str(m) for m in row.missing) or None
    return row


def day_range(start: date, end: date, zone: tzinfo = UTC) -> tuple[datetime, datetime]:
    """[start, end] as whole days in `zone`: the range of a request by date."""
    return (
        datetime.combine(start, time(), zone),
        datetime.combine(end + timedelta(days=1), time(), zone),
    )
