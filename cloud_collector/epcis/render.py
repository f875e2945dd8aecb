"""Stored events as EPCIS 2.0 JSON-LD: captured events as they came (plus the eventID we
assigned and their recordTime), our own edges' events (trace.v1 records) translated field
by field, a batch's TransformationEvent with its process readings summarised per device and
tag as a sensorElementList.

Our own identifiers are not GS1 keys (a read point `dock-1`, a purchase order `PO-7`), so
they are written as URNs under `urn:x-trace:` (OWN_URN below); queries accept both forms.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from protocols.mqtt.contract import TradingParty

OWN_URN = "urn:x-trace:"
# Our edges' bizSteps that CBV 2.0 does not have: written as URIs of ours.
NOT_CBV_BIZ_STEPS = frozenset({"consuming"})
OWN_NAMESPACE = {"trace": "urn:x-trace:epcis:"}

# UCUM units of our device profiles -> (EPCIS measurement type, UN/ECE Rec 20 code).
MEASUREMENTS: dict[str, tuple[str, str]] = {
    "Cel": ("Temperature", "CEL"),
    "K": ("Temperature", "KEL"),
    "bar": ("Pressure", "BAR"),
    "kPa": ("Pressure", "KPA"),
    "Pa": ("Pressure", "PAL"),
    "m3/h": ("VolumeFlowRate", "MQH"),
    "m3": ("Volume", "MTQ"),
    "L": ("Volume", "LTR"),
    "kg": ("Mass", "KGM"),
    "1/min": ("Frequency", "RPM"),
    "%": ("RelativeHumidity", "P1"),
}


_REC20 = re.compile(r"^[A-Z0-9]{2,3}$")


def own(kind: str, value: str) -> str:
    """An id of ours as a URN: own('loc', 'dock-1') -> urn:x-trace:loc:dock-1."""
    return value if ":" in value else f"{OWN_URN}{kind}:{value}"


def bare(kind: str, value: str) -> str:
    """The inverse of own(), for query parameters."""
    prefix = f"{OWN_URN}{kind}:"
    return value[len(prefix) :] if value.startswith(prefix) else value


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _offset(text: str) -> str:
    offset = datetime.fromisoformat(text).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def captured(body: dict[str, Any], event_id: str, record_time: datetime) -> dict[str, Any]:
    event = {"eventID": event_id, **body} if "eventID" not in body else dict(body)
    event["recordTime"] = iso(record_time)
    return event


def uom(unit: str | None) -> str | None:
    """A unit as EPCIS writes it (UN/ECE Rec 20, e.g. KGM); a UCUM unit of our profiles is
    translated; None when it is neither (the quantity then goes without its unit, which
    the event keeps in trace:units)."""
    if unit is None:
        return None
    if _REC20.match(unit):
        return unit
    return MEASUREMENTS[unit][1] if unit in MEASUREMENTS else None


def _items(items: list[dict[str, Any]], epcs: str, quantities: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unidentified = []
    odd_units = {}
    for item in items:
        if item.get("epc"):
            out.setdefault(epcs, []).append(item["epc"])
        elif item.get("epc_class"):
            element = {"epcClass": item["epc_class"]}
            if item.get("quantity") is not None:
                element["quantity"] = item["quantity"]
                if code := uom(item.get("uom")):
                    element["uom"] = code
                elif item.get("uom"):
                    odd_units[item["epc_class"]] = item["uom"]
            out.setdefault(quantities, []).append(element)
        elif item.get("raw"):
            unidentified.append(item["raw"])
    if unidentified:
        out[f"trace:unidentified{epcs[0].upper()}{epcs[1:]}"] = unidentified
    if odd_units:
        out[f"trace:units{quantities[0].upper()}{quantities[1:]}"] = odd_units
    return out


def _common(record: dict[str, Any], event_id: str, record_time: datetime) -> dict[str, Any]:
    return {
        "eventID": own("event", event_id),
        "eventTime": record["time"],
        "eventTimeZoneOffset": _offset(record["time"]),
        "recordTime": iso(record_time),
    }


def own_event(
    event_type: str,
    record: dict[str, Any],
    event_id: str,
    record_time: datetime,
    readings: list[dict[str, Any]],
) -> dict[str, Any]:
    """An edge's ObjectEventRecord or TransformationEventRecord as EPCIS JSON-LD."""
    event: dict[str, Any] = {"type": event_type, **_common(record, event_id, record_time)}
    if event_type == "ObjectEvent":
        event.update(_items(record["items"], "epcList", "quantityList"))
        if "epcList" not in event and "quantityList" not in event:
            event["epcList"] = []  # only unidentified items (a tag that decoded to nothing)
        event["action"] = record["action"]
    else:
        event.update(_items(record["inputs"], "inputEPCList", "inputQuantityList"))
        event.update(_items(record["outputs"], "outputEPCList", "outputQuantityList"))
        event["transformationID"] = own("batch", record["transformation_id"])
    step = record["biz_step"]
    event["bizStep"] = own("bizstep", step) if step in NOT_CBV_BIZ_STEPS else step
    if record.get("disposition"):
        event["disposition"] = record["disposition"]
    event["readPoint"] = {"id": own("loc", record["read_point"])}
    if record.get("biz_location"):
        event["bizLocation"] = {"id": own("loc", record["biz_location"])}
    if record.get("biz_transactions"):
        event["bizTransactionList"] = [
            {"type": t["type"], "bizTransaction": own(f"bt:{t['type']}", t["id"])}
            for t in record["biz_transactions"]
        ]
    event.update(trading_parties(record.get("parties") or []))
    if readings:
        event["sensorElementList"] = sensor_elements(readings)
    extensions = {
        "trace:line": record.get("line"),
        "trace:batch": record.get("batch"),
        "trace:operator": record.get("operator"),
        "trace:operators": record.get("operators") or None,
        "trace:device": record.get("device"),
        "trace:startedAt": record.get("started_at"),
        "trace:flags": record.get("flags") or None,
        "trace:sightings": record.get("sightings") or None,
    }
    event.update({k: v for k, v in extensions.items() if v is not None})
    return event


def trading_parties(parties: list[dict[str, Any]]) -> dict[str, Any]:
    """An edge's trading parties (contract TradingParty) as EPCIS sourceList and
    destinationList, each named by its GS1 Digital Link."""
    out: dict[str, Any] = {}
    for stored in parties:
        party = TradingParty.model_validate(stored)
        field = "sourceList" if party.side == "source" else "destinationList"
        out.setdefault(field, []).append({"type": party.type, party.side: party.uri()})
    return out


def sensor_elements(readings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per device, one sensorElement; per tag a report with min, max and mean of the batch's
    good readings (the full series is at /api/v1/batches/{batch}/parameters)."""
    by_device: dict[str, list[dict[str, Any]]] = {}
    for r in readings:
        by_device.setdefault(r["device"], []).append(r)
    elements = []
    for device, rows in by_device.items():
        reports = []
        for r in rows:
            kind, uom = MEASUREMENTS.get(r["unit"] or "", (own("tag", r["tag"]), None))
            report: dict[str, Any] = {
                "type": kind,
                "minValue": r["min"],
                "maxValue": r["max"],
                "meanValue": r["mean"],
                "trace:tag": r["tag"],
                "trace:count": r["count"],
            }
            if uom:
                report["uom"] = uom
            reports.append(report)
        elements.append(
            {
                "sensorMetadata": {
                    "deviceID": own("device", device),
                    "startTime": iso(min(r["first"] for r in rows)),
                    "endTime": iso(max(r["last"] for r in rows)),
                },
                "sensorReport": reports,
            }
        )
    return elements


def merge_contexts(
    events: list[tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One inline context for a page of events that came from different documents, and the
    events with a prefix renamed where two documents used it for different IRIs."""
    merged: dict[str, Any] = {}
    out = []
    for event, namespaces in events:
        renames: dict[str, str] = {}
        for prefix, iri in namespaces.items():
            target = prefix
            n = 2
            while target in merged and merged[target] != iri:
                target = f"{prefix}{n}"
                n += 1
            merged[target] = iri
            if target != prefix:
                renames[prefix] = target
        out.append(_renamed(event, renames) if renames else event)
    return merged, out


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {_rename(k, renames): _renamed(v, renames) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, renames) for v in value]
    return value


def _rename(key: str, renames: dict[str, str]) -> str:
    prefix, colon, rest = key.partition(":")
    return f"{renames[prefix]}:{rest}" if colon and prefix in renames else key
