"""OPC UA values <-> our samples: status codes, data values, node ids and deadband filters.

Pure functions, no sockets and no clock, so every status, type and timestamp case is
testable alone. asyncua is used here only for its data types and its status-code table.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from asyncua import ua
from asyncua.ua import status_codes

from protocols.driver import DeviceMisconfigured, Quality, Sample
from protocols.opcua.profile import Deadband, OpcUaTag

# The top two bits of a StatusCode are its severity (OPC 10000-4, 7.39). 0b11 is reserved
# and the specification says to treat it as bad.
SEVERITY: dict[int, Quality] = {
    0b00: "good",
    0b01: "uncertain",
    0b10: "bad",
    0b11: "bad",
}

# The low 16 bits carry info flags (overflow, limit bits); the name is in the high 16.
_CODE_MASK = 0xFFFF0000

# What a technician does about a status that means the profile, not the device, is wrong.
# These turn into DeviceMisconfigured at the driver boundary (retrying will not help).
CONFIGURATION_FIXES: dict[str, str] = {
    "BadNodeIdUnknown": "the server has no such node: correct the tag's node_id "
    "(browse the server, e.g. with UaExpert, and copy the node id)",
    "BadNodeIdInvalid": "the node id is malformed for this server: correct the tag's node_id",
    "BadAttributeIdInvalid": "the node is not a variable: point the tag's node_id at a "
    "variable node, not an object or folder",
    "BadNotReadable": "the node is not readable: ask the PLC programmer to make it readable",
    "BadUserAccessDenied": "this user may not read the node: check connection.username "
    "and the server's access rights",
    "BadIdentityTokenRejected": "the server refuses this kind of login: set or remove "
    "connection.username/password as the server requires",
    "BadIdentityTokenInvalid": "the server refuses the login: check connection.username "
    "and connection.password",
    "BadSecurityPolicyRejected": "the server refuses this security policy: set "
    "connection.security.mode to one the server offers",
    "BadSecurityModeRejected": "the server refuses this security mode: set "
    "connection.security.mode to one the server offers",
    "BadCertificateUntrusted": "the server does not trust this edge's certificate: trust it "
    "on the server (most servers list it under rejected certificates)",
    "BadCertificateInvalid": "the server rejects this edge's certificate as invalid: "
    "regenerate it (see the OPC UA README)",
    "BadCertificateTimeInvalid": "this edge's certificate has expired or is not yet valid "
    "(check the clock): regenerate it",
    "BadCertificateUriInvalid": "the URI in this edge's certificate does not match: "
    "regenerate the certificate with the application URI",
    "BadCertificateUseNotAllowed": "this edge's certificate is not allowed for a client: "
    "regenerate it as a client certificate",
    "BadCertificateRevoked": "this edge's certificate was revoked on the server: issue a new one",
    "BadSecurityChecksFailed": "the server rejected the secure channel: check the "
    "certificates on both sides and security.server_certificate",
    "BadMonitoredItemFilterUnsupported": "the server does not support deadbands on this "
    "node: remove the tag's deadband",
    "BadFilterNotAllowed": "the server does not allow a deadband on this node "
    "(percent needs an EURange): remove the deadband or use type absolute",
    "BadDeadbandFilterInvalid": "the server refuses this deadband: check its type and value",
    "BadTcpEndpointUrlInvalid": "the server does not know this endpoint path: "
    "correct connection.endpoint",
}

DEADBAND_TYPES: dict[str, ua.DeadbandType] = {
    "absolute": ua.DeadbandType.Absolute,
    "percent": ua.DeadbandType.Percent,
}


def status_name(code: int) -> str | None:
    """The status's symbolic name, e.g. BadSensorFailure; None for a code not in the spec."""
    known = status_codes.code_to_name_doc.get(code & _CODE_MASK)
    return known[0] if known else None


def status_text(code: int) -> str:
    """'BadSensorFailure (0x808C0000)': the name a technician searches for, and the number
    the server's own logs show."""
    name = status_name(code) or f"unknown {SEVERITY[(code >> 30) & 0b11]} status"
    return f"{name} (0x{code:08X})"


def quality_of(code: int) -> tuple[Quality, str | None]:
    """Our quality for an OPC UA status code, and a detail naming the status unless good."""
    quality = SEVERITY[(code >> 30) & 0b11]
    return quality, (None if quality == "good" else status_text(code))


def configuration_fix(code: int) -> str | None:
    """What to change in the profile (or on the server) for a status that will not clear."""
    name = status_name(code)
    return CONFIGURATION_FIXES.get(name) if name else None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    # asyncua decodes timestamps as aware UTC; a naive one (built by hand) is UTC by spec.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def device_time(value: ua.DataValue) -> datetime | None:
    """When the device took the value: its SourceTimestamp, else the ServerTimestamp."""
    return _utc(value.SourceTimestamp) or _utc(value.ServerTimestamp)


def to_sample(tag: OpcUaTag, value: ua.DataValue, *, batch_source: bool = False) -> Sample:
    """One tag's DataValue as a Sample.

    Bad status: no value. Uncertain: the value, flagged. A string is only meaningful for the
    profile's batch_source tag (it becomes `text`); anywhere else it is a bad reading.
    """
    code = value.StatusCode.value if value.StatusCode is not None else 0
    quality, detail = quality_of(code)
    moment = device_time(value)
    if quality == "bad":
        fix = configuration_fix(code)
        if fix:
            detail = f"{detail}: node {tag.node_id}: {fix}"
        return Sample(tag.name, None, tag.unit, "bad", moment, detail)

    raw = value.Value.Value if value.Value is not None else None

    def bad(why: str) -> Sample:
        return Sample(tag.name, None, tag.unit, "bad", moment, why)

    if raw is None:
        return bad(f"node {tag.node_id} has no value (null) with status {status_text(code)}")
    if isinstance(raw, str):
        if batch_source:
            return Sample(tag.name, None, tag.unit, quality, moment, detail, text=raw)
        return bad(
            f"node {tag.node_id} holds the text {raw[:40]!r}, not a number: only the "
            "profile's batch_source tag may be text; check the tag's node_id"
        )
    if isinstance(raw, list):
        return bad(f"node {tag.node_id} holds an array: point the tag at a single element")
    if not isinstance(raw, bool | int | float):
        return bad(
            f"node {tag.node_id} holds a {type(raw).__name__}, not a number: "
            "point the tag at a numeric variable"
        )
    number = float(raw)
    if math.isnan(number) or math.isinf(number):
        return bad(f"device sent {number}")
    return Sample(tag.name, number * tag.scale + tag.offset, tag.unit, quality, moment, detail)


def parse_node_id(tag: OpcUaTag) -> ua.NodeId:
    """The tag's node id, or DeviceMisconfigured naming the tag and the accepted forms."""
    try:
        return ua.NodeId.from_string(tag.node_id)
    except Exception as err:  # asyncua raises its own parsing error or ValueError
        raise DeviceMisconfigured(
            f"tag {tag.name}: node_id {tag.node_id!r} is not an OPC UA node id: write it as "
            "ns=<index>;s=<name>, ns=<index>;i=<number> or nsu=<namespace uri>;s=<name>"
        ) from err


def data_change_filter(tag: OpcUaTag) -> ua.DataChangeFilter | None:
    """The server-side filter for the tag's deadband; None reports every change.

    The profile's absolute deadband is in the tag's engineering unit; the server compares
    raw values, so it is divided by the tag's scale. A percent deadband is of the node's
    EURange and needs no conversion.
    """
    deadband: Deadband | None = tag.deadband
    if deadband is None or deadband.value == 0:
        return None
    value = deadband.value
    if deadband.type == "absolute":
        value = value / abs(tag.scale)
    return ua.DataChangeFilter(
        Trigger=ua.DataChangeTrigger.StatusValue,
        DeadbandType=int(DEADBAND_TYPES[deadband.type]),
        DeadbandValue=value,
    )


def queue_size(publishing_interval_s: float, sampling_interval_s: float) -> int:
    """Server-side queue per monitored item: room for every sample taken between two
    publishes and one more for timing jitter, so fast changes between publishes are not
    lost (bounded to 100)."""
    if sampling_interval_s <= 0:
        return 10  # "as fast as possible": a modest queue, the server revises it anyway
    return max(1, min(100, math.ceil(publishing_interval_s / sampling_interval_s) + 1))
