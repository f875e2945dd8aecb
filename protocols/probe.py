"""A probe: a profile run once against the live device before it goes live. Connect as the
edge would, read every tag once (a listening device: its reads for a few seconds, a scanner
until its first scan), close. The same code runs on the line PC (`tracectl profile probe`)
and on the edge for a probe the collector asks for, and both show the same `ProbeResult`
(protocols/mqtt/contract.py): where each tag was read, the raw answer, the decoded value,
unit and quality beside the spec limits, and what the raw answer reads as under the
profile's other decoding settings.

Drivers come from the protocol registry; a driver with the optional `Probing` capability
shows its raw answer, any other polling driver its samples only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

from protocols.driver import (
    DeviceMisconfigured,
    DeviceUnavailable,
    PollingDriver,
    ProbeReading,
    Probing,
    StreamingDriver,
)
from protocols.installed import REGISTRY
from protocols.mqtt.contract import (
    MAX_PROBE_ITEMS,
    MAX_PROBE_TAGS,
    ProbeAlternative,
    ProbedTag,
    ProbeResult,
)
from protocols.profile import ProfileBase, SpecLimits, Tagged
from protocols.registry import Registry
from protocols.scanner.profile import SerialScannerProfile, WedgeScannerProfile

TEXT = 500  # characters of one raw answer or item the result keeps


class ProbeFailed(Exception):
    """The probe could not run: the device did not answer or refuses the profile."""


@dataclasses.dataclass
class ProbeReport:
    device: str
    protocol: str
    readings: list[ProbeReading] = dataclasses.field(default_factory=list)
    events: list[Any] = dataclasses.field(default_factory=list)  # RFID reads, scans
    listened_s: float | None = None


async def probe(
    profile: ProfileBase, seconds: float = 5.0, registry: Registry = REGISTRY
) -> ProbeReport:
    """Connect, read every tag once (or listen), close; ProbeFailed says why it could not."""
    driver = registry.driver_for(profile)
    report = ProbeReport(profile.name, profile.protocol)
    try:
        await driver.open()
        if isinstance(driver, Probing):
            report.readings = await driver.probe()
        elif isinstance(driver, StreamingDriver):
            await _listen(driver, profile, seconds, report)
        else:
            polling: PollingDriver = driver
            report.readings = [ProbeReading(s, s.tag, "-") for s in await polling.read()]
    except DeviceUnavailable as err:
        raise ProbeFailed(f"the device did not answer: {err}") from err
    except DeviceMisconfigured as err:
        raise ProbeFailed(f"the device refuses the profile: {err}") from err
    finally:
        await driver.close()
    return report


async def _listen(
    driver: StreamingDriver, profile: ProfileBase, seconds: float, report: ProbeReport
) -> None:
    """RFID: every read for `seconds`. A scanner: until its first scan (at most `seconds`)."""
    one_scan = isinstance(profile, SerialScannerProfile | WedgeScannerProfile)
    first = asyncio.Event()

    def deliver(items: list[Any]) -> None:
        report.events.extend(items)
        if items:
            first.set()

    streaming = asyncio.create_task(driver.stream(deliver))
    started = asyncio.get_running_loop().time()
    try:
        if one_scan:
            waiting = asyncio.create_task(first.wait())
            await asyncio.wait({streaming, waiting}, timeout=seconds, return_when="FIRST_COMPLETED")
            waiting.cancel()
        else:
            await asyncio.wait({streaming}, timeout=seconds)
        if streaming.done():
            streaming.result()  # DeviceUnavailable: the port was lost
    finally:
        streaming.cancel()
        await asyncio.gather(streaming, return_exceptions=True)
        report.listened_s = asyncio.get_running_loop().time() - started


def spec_of(profile: ProfileBase, tag: str) -> SpecLimits | None:
    if not isinstance(profile, Tagged):
        return None
    return next((t.spec for t in profile.tags if t.name == tag), None)


def within(spec: SpecLimits | None, value: float | None) -> bool | None:
    if spec is None or value is None:
        return None
    return (spec.low is None or value >= spec.low) and (spec.high is None or value <= spec.high)


def describe_item(item: Any) -> str:
    """An RFID read or a scan in one line (its fields that are set)."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        fields = dataclasses.asdict(item)
        text = ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    else:
        text = repr(item)
    return clean(text)


def clean(text: str, limit: int = TEXT) -> str:
    """Text the contract takes: bounded, no NUL (a device's bytes are outside input)."""
    return text.replace("\x00", "\\x00").encode("utf-8", "replace").decode("utf-8")[:limit]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def result_of(
    report: ProbeReport,
    profile: ProfileBase,
    edge_id: str,
    request_id: str,
    profile_sha256: str | None = None,
) -> ProbeResult:
    """The probe as the contract carries it, each tag beside its spec limits."""
    tags = []
    for r in report.readings[:MAX_PROBE_TAGS]:
        s = r.sample
        spec = spec_of(profile, s.tag)
        value = _finite(s.value)
        tags.append(
            ProbedTag(
                tag=s.tag,
                where=clean(r.where),
                raw=clean(r.raw),
                value=value,
                text=None if s.text is None else clean(s.text),
                unit=s.unit,
                quality=s.quality,
                detail=None if s.detail is None else clean(s.detail),
                spec_low=None if spec is None else spec.low,
                spec_high=None if spec is None else spec.high,
                within_spec=within(spec, value),
                alternatives=[
                    ProbeAlternative(label=clean(label), value=v, within_spec=within(spec, v))
                    for label, v in r.alternatives[:16]
                    if math.isfinite(v)
                ],
            )
        )
    return ProbeResult(
        edge_id=edge_id,
        request_id=request_id,
        device=report.device,
        protocol=report.protocol,
        probed_at=datetime.now(UTC),
        profile_sha256=profile_sha256,
        tags=tags,
        items=[describe_item(e) for e in report.events[:MAX_PROBE_ITEMS]],
        items_seen=len(report.events),
        listened_s=report.listened_s,
    )
