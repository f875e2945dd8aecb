"""EPCIS master data from a captured document's header (`epcisHeader.epcisMasterData`):
every vocabulary element kept as sent (`epcis_vocabulary_elements`), and what the FSMA 204
exports need of it merged into the tables the ERP import fills: a location's description
(business name, address, phone) into `locations`, a trade item's name into `products`.

Reading (`elements`) is pure and runs with the document's other checks, before any I/O: a
value too long for its column refuses the document with its JSON path. Storing (`store`)
runs in the capture's transaction, after the capture job.

**Precedence** (who may change what was said of a place or a product), by where the row
came from (`capture_id`, `partner_id` on the row, migration 0015):

| the row came from | our master data (importer, admin) | a partner's master data |
| --- | --- | --- |
| (no row) | creates it | creates it |
| the ERP import (or written directly) | fills empty fields only | fills empty fields only |
| our master data | replaces it | fills empty fields only |
| a partner's master data | replaces it | replaces it if it is the same partner's |

The ERP import replaces everything and clears the provenance (erp.py). A partner describes
only its own locations (`Partner.may_capture_at`): one element about another place refuses
the whole document (403, `outside`), as an event there would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from cloud_collector import places
from cloud_collector.auth import Partner
from cloud_collector.epcis import genealogy_feed
from cloud_collector.epcis.document import InvalidDocument
from cloud_collector.epcis.identifiers import keys
from protocols import gs1

VTYPE = "urn:epcglobal:epcis:vtype:"
LOCATION_TYPES = frozenset({VTYPE + "BusinessLocation", VTYPE + "ReadPoint", VTYPE + "Location"})
TRADE_ITEM_TYPE = VTYPE + "EPCClass"

# The standard context's prefixes an attribute id may use (a document may redefine them).
STANDARD_PREFIXES = {"cbvmda": "urn:epcglobal:cbv:mda:", "gs1": "https://gs1.org/voc/"}
# CBV master data attribute ids are written `urn:epcglobal:cbv:mda#name` (CBV 1.x, the
# XML binding) or `urn:epcglobal:cbv:mda:name` (the 2.0 context's `cbvmda:` prefix); the GS1
# Web Vocabulary's terms are `https://gs1.org/voc/...` (`gs1:`).
CBV_MDA = ("urn:epcglobal:cbv:mda#", "urn:epcglobal:cbv:mda:")
GS1_VOC = ("https://gs1.org/voc/", "http://gs1.org/voc/")

# Location description part <- the attribute names that give it (CBV master data, or the
# GS1 Web Vocabulary; CBV has no phone number attribute). The first one present wins.
LOCATION_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "name": ("name", "physicalLocationName"),
    "street1": ("streetAddressOne", "streetAddress"),
    "street2": ("streetAddressTwo", "streetAddressLine2"),
    "street3": ("streetAddressThree", "streetAddressLine3"),
    "city": ("city", "addressLocality"),
    "state": ("state", "addressRegion"),
    "postal_code": ("postalCode",),
    "country": ("countryCode", "addressCountry"),
    "phone": ("telephone",),
    "site": ("site",),  # the GLN the location is part of
}
# A product's name <- the first of these a trade item (EPCClass) element carries.
PRODUCT_NAME_ATTRIBUTES = (
    "tradeItemDescription",
    "descriptionShort",
    "regulatedProductName",
    "productName",
    "functionalName",
    "labelDescription",
)
# Column widths, as the ERP import checks them (erp.Location, erp.Product).
MAX_NAME, MAX_ADDRESS, MAX_PHONE = 200, 500, 64
MAX_ELEMENTS = 10_000  # vocabulary elements in one capture


@dataclass(frozen=True)
class Place:
    """What a location element says of the place, in the locations table's columns."""

    name: str | None
    address: str | None
    phone: str | None
    gln: str | None
    kind: str | None = None  # places.Kind: its trace:placeKind attribute


# Our own attribute for a place's kind in the hierarchy (CBV has sub-site types, not these):
# `trace:placeKind` (prefix trace = urn:x-trace:epcis:, as our event extensions).
PLACE_KIND = "urn:x-trace:epcis:placeKind"


@dataclass(frozen=True)
class Element:
    """One vocabulary element as sent, and what it says of a place or a product."""

    position: int
    vocabulary_type: str
    element_id: str
    attributes: list[Any]
    children: list[Any]
    path: str  # its JSON path in the document
    place: Place | None = None
    product: tuple[str, str] | None = None  # (GTIN-14, name)


def elements(vocabularies: list[dict[str, Any]], namespaces: dict[str, Any]) -> list[Element]:
    """The document's vocabulary elements, in order; InvalidDocument for one the tables
    cannot hold (too many elements, a name or an address longer than its column)."""
    prefixes = {**STANDARD_PREFIXES, **{k: v for k, v in namespaces.items() if isinstance(v, str)}}
    found: list[Element] = []
    for v, vocabulary in enumerate(vocabularies):
        vtype = _expand(vocabulary["type"], prefixes)
        for e, element in enumerate(vocabulary.get("vocabularyElementList", [])):
            path = f"$.epcisHeader.epcisMasterData.vocabularyList[{v}].vocabularyElementList[{e}]"
            if len(found) >= MAX_ELEMENTS:
                raise InvalidDocument(
                    "$.epcisHeader.epcisMasterData",
                    f"more than {MAX_ELEMENTS} vocabulary elements: split the master data "
                    "into several captures",
                    status=413,
                    kind="epcisException:CaptureLimitExceededException",
                )
            attributes = _attributes(element.get("attributes", []), prefixes)
            item = Element(
                len(found), vtype, element["id"], element.get("attributes", []),
                element.get("children", []), path,
            )  # fmt: skip
            if vtype in LOCATION_TYPES:
                item = _with_place(item, attributes)
                item = _with_kind(item, element.get("attributes", []), prefixes)
            elif vtype == TRADE_ITEM_TYPE:
                item = _with_product(item, attributes)
            found.append(item)
    return found


def outside(partner: Partner | None, found: list[Element]) -> InvalidDocument | None:
    """A partner describes only its own locations: the first element about another place."""
    if partner is None:
        return None
    for element in found:
        if element.vocabulary_type in LOCATION_TYPES and not partner.may_capture_at(
            element.element_id
        ):
            return InvalidDocument(
                element.path,
                f"{element.element_id} is not a location of partner {partner.partner_id!r}: a "
                "partner describes only its own locations (leave others out of the master "
                "data; an admin adds locations to the partner)",
                status=403,
                kind="epcisException:SecurityException",
            )
    return None


def _expand(term: str, prefixes: dict[str, str]) -> str:
    prefix, colon, local = term.partition(":")
    if colon and prefix in prefixes and not local.startswith("//"):
        return prefixes[prefix] + local
    return term


def _local(iri: str) -> str | None:
    """The attribute's name if it is a CBV master data attribute or a GS1 Web Vocabulary
    term (both namespaces read alike: the tables below name each part in both)."""
    for namespace in CBV_MDA + GS1_VOC:
        if iri.startswith(namespace):
            return iri[len(namespace) :]
    return None


def _attributes(given: list[Any], prefixes: dict[str, str]) -> dict[str, Any]:
    """name -> value of the standard attributes (the first of a repeated one); a GS1
    PostalAddress or ContactPoint object (`gs1:address`, `gs1:contactPoint`) opened."""
    out: dict[str, Any] = {}
    for attribute in given:
        name = _local(_expand(attribute["id"], prefixes))
        value = attribute.get("attribute")
        if name is None:
            continue
        if isinstance(value, dict) and name in ("address", "contactPoint"):
            for key, inner in value.items():
                local = _local(_expand(key, prefixes)) or key
                out.setdefault(local, inner)
        else:
            out.setdefault(name, value)
    return out


def _text(attributes: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, dict):  # gs1:addressCountry as a gs1:Country {countryCode}
            value = value.get("countryCode") or value.get("gs1:countryCode")
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value).strip()
            if text:
                return text
    return None


def _checked(item: Element, what: str, value: str | None, limit: int) -> str | None:
    if value is not None and len(value) > limit:
        raise InvalidDocument(
            f"{item.path}.attributes",
            f"the {what} of {item.element_id} is {len(value)} characters long, more than {limit}",
        )
    return value


def _with_place(item: Element, attributes: dict[str, Any]) -> Element:
    part = {k: _text(attributes, names) for k, names in LOCATION_ATTRIBUTES.items()}
    region = " ".join(x for x in (part["state"], part["postal_code"]) if x)
    lines = [part["street1"], part["street2"], part["street3"], part["city"], region]
    address = ", ".join(x for x in (*lines, part["country"]) if x) or None
    place = Place(
        name=_checked(item, "name", part["name"], MAX_NAME),
        address=_checked(item, "address", address, MAX_ADDRESS),
        phone=_checked(item, "phone number", part["phone"], MAX_PHONE),
        gln=_gln(item.element_id, part["site"]),
    )
    return replace(item, place=place)


def _with_kind(item: Element, given: list[Any], prefixes: dict[str, str]) -> Element:
    """The place's kind from its trace:placeKind attribute; InvalidDocument for a kind
    that is none of places.KINDS."""
    ours = {**prefixes, "trace": prefixes.get("trace", "urn:x-trace:epcis:")}
    for attribute in given:
        if _expand(attribute["id"], ours) != PLACE_KIND:
            continue
        kind = attribute.get("attribute")
        if kind not in places.KINDS:
            raise InvalidDocument(
                f"{item.path}.attributes",
                f"the placeKind of {item.element_id} is {kind!r}: one of {', '.join(places.KINDS)}",
            )
        assert item.place is not None  # _with_place ran first
        return replace(item, place=replace(item.place, kind=str(kind)))
    return item


def _gln(location: str, site: str | None) -> str | None:
    """The GLN of an SGLN or Digital Link location (its site's), or the site attribute."""
    if site and gs1.digits(site) and len(site) == 13:
        return site
    if gs1.digits(location) and len(location) == 13:
        return location
    key = gs1.from_urn(location) if location.startswith("urn:") else gs1.from_digital_link(location)
    return key.gln if key and key.kind in ("gln", "sgln") else None


def _with_product(item: Element, attributes: dict[str, Any]) -> Element:
    gtin = keys(item.element_id).gtin
    name = _checked(item, "name", _text(attributes, PRODUCT_NAME_ATTRIBUTES), MAX_NAME)
    if gtin is None or name is None:
        return item
    return replace(item, product=(gtin, name))


# ---- Storing, in the capture's transaction ---------------------------------------------

_INSERT_ELEMENT = """
insert into epcis_vocabulary_elements (capture_id, position, vocabulary_type, element_id,
    attributes, children, context, partner_id)
values (%s, %s, %s, %s, %s, %s, %s, %s)
"""
# Whether the new description replaces the row's (else it only fills empty fields): the row
# came from master data (not the ERP) and the new one is ours, or the same partner's.
_REPLACES = (
    "({t}.capture_id is not null and (%(partner)s::text is null or {t}.partner_id = %(partner)s))"
)
_LOCATION_REPLACES = _REPLACES.format(t="locations")
_UPSERT_LOCATION = f"""
insert into locations (location_id, name, address, phone, gln, capture_id, partner_id, kind)
values (%(id)s, %(name)s, %(address)s, %(phone)s, %(gln)s, %(capture)s, %(partner)s, %(kind)s)
on conflict (location_id) do update set
    kind = case when {_LOCATION_REPLACES} then coalesce(excluded.kind, locations.kind)
           else coalesce(locations.kind, excluded.kind) end,
    name = case when {_LOCATION_REPLACES} then excluded.name else locations.name end,
    address = case when {_LOCATION_REPLACES} then coalesce(excluded.address, locations.address)
              else coalesce(locations.address, excluded.address) end,
    phone = case when {_LOCATION_REPLACES} then coalesce(excluded.phone, locations.phone)
            else coalesce(locations.phone, excluded.phone) end,
    gln = coalesce(locations.gln, excluded.gln),
    capture_id = case when {_LOCATION_REPLACES} then excluded.capture_id
                 else locations.capture_id end,
    partner_id = case when {_LOCATION_REPLACES} then excluded.partner_id
                 else locations.partner_id end
"""
# An element without a name describes a place only if it is known already (a row needs a
# business name, which is never invented).
_UPDATE_LOCATION = f"""
update locations set
    address = case when {_LOCATION_REPLACES} then coalesce(%(address)s, address)
              else coalesce(address, %(address)s) end,
    phone = case when {_LOCATION_REPLACES} then coalesce(%(phone)s, phone)
            else coalesce(phone, %(phone)s) end,
    gln = coalesce(gln, %(gln)s),
    kind = case when {_LOCATION_REPLACES} then coalesce(%(kind)s, kind)
           else coalesce(kind, %(kind)s) end
where location_id = %(id)s
"""
# A place's children are part of it, unless the ERP placed them (our master data only: a
# partner's hierarchy is its own business).
_CHILDREN = """
update locations set parent_id = %s
where location_id = any(%s) and location_id <> %s and (parent_id is null or capture_id is not null)
"""
_UPSERT_PRODUCT = f"""
insert into products (gtin, name, capture_id, partner_id)
values (%(gtin)s, %(name)s, %(capture)s, %(partner)s)
on conflict (gtin) do update set name = excluded.name, capture_id = excluded.capture_id,
    partner_id = excluded.partner_id
where {_REPLACES.format(t="products")}
"""


async def _only_its_own_products(conn: AsyncConnection, found: list[Element], partner: str) -> None:
    """A partner describes products of its own company prefix or products we do not know:
    naming one of ours would put its words in our FSMA 204 product descriptions."""
    products = {e.product[0]: e for e in found if e.product is not None}
    refused = await genealogy_feed.product_not_its_own(conn, list(products), partner)
    if refused is not None:
        gtin, prefixes = refused
        raise InvalidDocument(
            products[gtin].path,
            f"GTIN {gtin} is a product we know, not of partner {partner!r}'s company prefix "
            f"({', '.join(prefixes) or genealogy_feed.NO_PREFIX_KNOWN}): a partner describes "
            "only products of its own",
            status=403,
            kind="epcisException:SecurityException",
        )


async def store(
    conn: AsyncConnection,
    found: list[Element],
    namespaces: dict[str, Any],
    capture_id: str,
    partner: str | None,
) -> None:
    """Keep every element as sent, then merge places and products by the precedence
    above. The caller holds the transaction (and has checked `outside`)."""
    if not found:
        return
    if partner is not None:
        await _only_its_own_products(conn, found, partner)
    async with conn.cursor() as cur:
        await cur.executemany(
            _INSERT_ELEMENT,
            [
                (capture_id, e.position, e.vocabulary_type, e.element_id, Jsonb(e.attributes),
                 Jsonb(e.children), Jsonb(namespaces), partner)
                for e in found
            ],
        )  # fmt: skip
    async with conn.pipeline(), conn.cursor() as cur:  # nobody reads the results
        for e in found:
            if e.place is not None and (
                e.place.name or e.place.address or e.place.phone or e.place.kind
            ):
                params = {
                    "id": e.element_id, **asdict(e.place), "capture": capture_id,
                    "partner": partner,
                }  # fmt: skip
                await cur.execute(_UPSERT_LOCATION if e.place.name else _UPDATE_LOCATION, params)
            if e.product is not None:
                gtin, name = e.product
                await cur.execute(
                    _UPSERT_PRODUCT,
                    {"gtin": gtin, "name": name, "capture": capture_id, "partner": partner},
                )
        # After every place is there: a parent may come before its children.
        for e in found:
            children = [c for c in e.children if isinstance(c, str)]
            if e.place is not None and children and partner is None:
                await cur.execute(_CHILDREN, (e.element_id, children, e.element_id))
