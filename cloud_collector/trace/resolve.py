"""Which lot a person means, from every form they have of it: a lot id, GTIN + lot as an
EPC class URN, Digital Link or element string (read by the GS1 module), a unit's EPC or
SSCC, or a lot code."""

from __future__ import annotations

from psycopg import AsyncConnection

from cloud_collector.trace.models import AmbiguousLot, Lot, UnknownLot
from cloud_collector.trace.rows import lots_where
from protocols import gs1


async def resolve(conn: AsyncConnection, text: str) -> Lot:
    """The lot `text` names: an internal id, GTIN + lot (EPC class URI, Digital Link, GS1
    element string), a unit's EPC or SSCC, or a lot code alone (if it is unambiguous)."""
    text = text.strip()
    found: list[Lot] = []
    if gs1.digits(text) and len(text) < 14:
        found = await lots_where(conn, "lot_id = %s", (int(text),))
    elif (key := gs1.parse(text)) and key.gtin and key.lot:
        found = await lots_where(conn, "gtin = %s and lot_code = %s", (key.gtin, key.lot))
    elif key and key.sscc:
        found = await _unit_lots(conn, key.sscc)
    elif text.startswith("urn:epc:id:"):
        found = await _unit_lots(conn, text)
    elif not (text.startswith("(") or gs1.GS in text):  # an element string is no lot code
        found = await lots_where(conn, "lot_code = %s or supplier_lot = %s", (text, text))
    if not found:
        raise UnknownLot(
            f"no lot is known as {text!r}: give a lot id, GTIN + lot (urn:epc:class:lgtin:..., "
            "01/{gtin}/10/{lot} or (01)...(10)...), a unit's EPC or SSCC, or a lot code"
        )
    if len(found) > 1:
        raise AmbiguousLot(text, found)
    return found[0]


async def _unit_lots(conn: AsyncConnection, key: str) -> list[Lot]:
    return await lots_where(
        conn,
        "lot_id in (select lot_id from units where epc = %s or sscc = %s or epc = %s)",
        (key, key, f"sscc:{key}"),
    )
