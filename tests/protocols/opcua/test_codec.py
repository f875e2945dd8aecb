"""The pure OPC UA codec: the cases in codec_cases.yaml, then node ids, deadband filters and
queue sizes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua

from device_profiles.schema import OpcUaTag
from protocols.driver import DeviceMisconfigured
from protocols.opcua.codec import (
    data_change_filter,
    device_time,
    parse_node_id,
    quality_of,
    queue_size,
    status_text,
    to_sample,
)
from tests.protocols.opcua.helpers import as_record, parse_time

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "codec_cases.yaml").read_text(encoding="utf-8")
)


def data_value(spec: dict[str, Any]) -> ua.DataValue:
    status = spec["status"]
    code = getattr(ua.StatusCodes, status) if isinstance(status, str) else status
    return ua.DataValue(
        ua.Variant(spec["value"], getattr(ua.VariantType, spec["type"])),
        ua.StatusCode(code),
        SourceTimestamp=parse_time(spec.get("source_time")),
        ServerTimestamp=parse_time(spec.get("server_time")),
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    tag = OpcUaTag.model_validate(case["tag"])
    sample = to_sample(tag, data_value(case["data"]), batch_source=case.get("batch_source", False))
    expected = dict(case["expected"])
    if "device_time" in expected:
        expected["device_time"] = parse_time(expected["device_time"])
    assert as_record(sample) == expected


def test_device_time_is_always_utc() -> None:
    berlin = timezone(timedelta(hours=2))
    aware = ua.DataValue(ua.Variant(1.0), SourceTimestamp=datetime(2024, 5, 1, 10, tzinfo=berlin))
    naive = ua.DataValue(ua.Variant(1.0), SourceTimestamp=datetime(2024, 5, 1, 8))
    for value in (aware, naive):
        moment = device_time(value)
        assert moment == datetime(2024, 5, 1, 8, tzinfo=UTC) and moment.tzinfo is UTC


@pytest.mark.parametrize(
    ("code", "quality", "text"),
    [
        (0x00000000, "good", "Good (0x00000000)"),
        (0x00960000, "good", "GoodLocalOverride (0x00960000)"),
        (0x40930000, "uncertain", "UncertainSensorNotAccurate (0x40930000)"),
        (0x808C0000, "bad", "BadSensorFailure (0x808C0000)"),
        (0x80050000, "bad", "BadCommunicationError (0x80050000)"),
        (0x40940000 | 0x0400, "uncertain", "UncertainEngineeringUnitsExceeded (0x40940400)"),
    ],
)
def test_severity_bits_decide_the_quality(code: int, quality: str, text: str) -> None:
    assert quality_of(code) == (quality, None if quality == "good" else text)
    assert status_text(code) == text


@pytest.mark.parametrize(
    "node_id",
    [
        "ns=2;s=Reactor1.Temperature",
        "i=2258",
        "ns=3;i=1042",
        "nsu=urn:x;s=A.B",
        "ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a",
    ],
)
def test_node_ids_in_every_written_form_parse(node_id: str) -> None:
    parse_node_id(OpcUaTag(name="t", node_id=node_id))


@pytest.mark.parametrize("node_id", ["Reactor1.Temperature", "ns=2;x=1", "ns=two;s=T"])
def test_a_malformed_node_id_names_the_tag_and_the_forms(node_id: str) -> None:
    with pytest.raises(DeviceMisconfigured, match=r"tag t: node_id .* is not an OPC UA node id"):
        parse_node_id(OpcUaTag(name="t", node_id=node_id))


def test_absolute_deadband_is_converted_to_the_servers_raw_unit() -> None:
    tag = OpcUaTag.model_validate(
        {"name": "t", "node_id": "i=1", "scale": -0.1, "deadband": {"value": 0.5}}
    )
    flt = data_change_filter(tag)
    assert flt is not None
    assert flt.DeadbandType == ua.DeadbandType.Absolute
    assert flt.DeadbandValue == pytest.approx(5.0)
    assert flt.Trigger == ua.DataChangeTrigger.StatusValue


def test_percent_deadband_is_of_the_eu_range_unchanged() -> None:
    tag = OpcUaTag.model_validate(
        {"name": "t", "node_id": "i=1", "scale": 0.1, "deadband": {"type": "percent", "value": 2}}
    )
    flt = data_change_filter(tag)
    assert flt is not None
    assert (flt.DeadbandType, flt.DeadbandValue) == (ua.DeadbandType.Percent, 2)


@pytest.mark.parametrize("deadband", [None, {"value": 0}])
def test_no_or_zero_deadband_reports_every_change(deadband: dict[str, Any] | None) -> None:
    tag = OpcUaTag.model_validate({"name": "t", "node_id": "i=1", "deadband": deadband})
    assert data_change_filter(tag) is None


@pytest.mark.parametrize(
    ("publishing_s", "sampling_s", "size"),
    [(1.0, 0.5, 3), (1.0, 1.0, 2), (1.0, 2.0, 2), (10.0, 0.01, 100), (1.0, 0.0, 10)],
)
def test_queue_holds_the_samples_between_two_publishes(
    publishing_s: float, sampling_s: float, size: int
) -> None:
    assert queue_size(publishing_s, sampling_s) == size
