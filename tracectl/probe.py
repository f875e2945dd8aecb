"""`tracectl profile probe FILE`: run a profile against the live device before it goes live,
on the line PC. Connects as the edge would, reads every tag once and prints, per tag, where
it was read, what the device answered (registers, the node's value and status), the
decoded value, unit and quality, and the spec limits; for multi-register values, what the
same registers would read as under the other byte and word orders, so a wrong address,
data type, word order or scale is plain at a glance. An RFID reader is listened to for a
few seconds; a scanner waits for one scan.

Drivers come from the protocol registry (the edge's own); a driver with the optional
`Probing` capability shows its raw answer, any other polling driver its samples only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import socket
from pathlib import Path
from typing import Any

from device_profiles.schema import (
    DeviceProfile,
    ProfileError,
    SerialScannerProfile,
    WedgeScannerProfile,
    load_profile,
)
from device_profiles.sites import canonical_json, content_hash
from protocols.driver import (
    DeviceMisconfigured,
    DeviceUnavailable,
    PollingDriver,
    ProbeReading,
    Probing,
    StreamingDriver,
)
from protocols.installed import REGISTRY
from protocols.profile import SpecLimits, Tagged
from protocols.registry import Registry
from tracectl.collector_api import CollectorApi, CommandError
from tracectl.tables import safe, table


@dataclasses.dataclass
class ProbeReport:
    device: str
    protocol: str
    readings: list[ProbeReading] = dataclasses.field(default_factory=list)
    events: list[Any] = dataclasses.field(default_factory=list)  # RFID reads, scans
    listened_s: float | None = None


def _spec(profile: DeviceProfile, tag: str) -> SpecLimits | None:
    if not isinstance(profile, Tagged):
        return None
    return next((t.spec for t in profile.tags if t.name == tag), None)


def _within(spec: SpecLimits | None, value: float | None) -> bool | None:
    if spec is None or value is None:
        return None
    return (spec.low is None or value >= spec.low) and (spec.high is None or value <= spec.high)


def _limits(spec: SpecLimits | None) -> str:
    if spec is None:
        return "-"
    low = "" if spec.low is None else f"{spec.low:g}"
    high = "" if spec.high is None else f"{spec.high:g}"
    return f"{low}..{high}"


async def probe(
    profile: DeviceProfile, seconds: float = 5.0, registry: Registry = REGISTRY
) -> ProbeReport:
    """Connect, read every tag once (or listen), close; CommandError says why it could not."""
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
        raise CommandError(f"the device did not answer: {err}") from None
    except DeviceMisconfigured as err:
        raise CommandError(f"the device refuses the profile: {err}") from None
    finally:
        await driver.close()
    return report


async def _listen(
    driver: StreamingDriver, profile: DeviceProfile, seconds: float, report: ProbeReport
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


def render(report: ProbeReport, profile: DeviceProfile) -> list[str]:
    out = [f"device {safe(report.device)} ({report.protocol}):"]
    rows, notes = [], []
    for r in report.readings:
        s = r.sample
        spec = _spec(profile, s.tag)
        within = _within(spec, s.value)
        value = s.text if s.text is not None else (None if s.value is None else f"{s.value:.6g}")
        check = "ok" if within else ("OUT OF SPEC" if within is False else "")
        if s.quality != "good":
            check = s.detail or s.quality
        rows.append([s.tag, r.where, r.raw, value, s.unit, s.quality, _limits(spec), check])
        for label, other in r.alternatives:
            mark = "  <- within spec" if within is False and _within(spec, other) else ""
            notes.append(f"  {safe(s.tag)}: as {label}: {other:.6g}{mark}")
    if rows:
        out.append(
            table(["TAG", "WHERE", "RAW", "VALUE", "UNIT", "QUALITY", "SPEC", "CHECK"], rows, "  ")
        )
    if notes:
        out.append("the same registers under other byte/word orders:")
        out += notes
    if report.listened_s is not None:
        out.append(f"  {len(report.events)} item(s) in {report.listened_s:.1f} s:")
        out += [f"    {safe(_item(item))}" for item in report.events[:200]]
        if not report.events:
            out.append(
                "    nothing: is a tag in the field / was a label scanned? Check the port, "
                "the baud rate and the reader's antennas"
            )
    return out


def _item(item: Any) -> str:
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        fields = dataclasses.asdict(item)
        return ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    return repr(item)


def _json(report: ProbeReport) -> dict[str, Any]:
    return {
        "device": report.device,
        "protocol": report.protocol,
        "readings": [dataclasses.asdict(r) for r in report.readings],
        "events": [
            dataclasses.asdict(e)
            if dataclasses.is_dataclass(e) and not isinstance(e, type)
            else repr(e)
            for e in report.events
        ],
        "listened_s": report.listened_s,
    }


def cmd_probe(args: argparse.Namespace) -> None:
    try:
        profile = load_profile(Path(args.file))
    except ProfileError as err:
        raise CommandError(f"{err.source}: " + "; ".join(err.problems)) from None
    # The drivers translate every library error into one line; the libraries' own log lines
    # of the same failure would only repeat it.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    report = asyncio.run(probe(profile, args.seconds))
    if args.json:
        print(json.dumps(_json(report), indent=2, default=str))
    else:
        print("\n".join(render(report, profile)))
    bad = [r for r in report.readings if r.sample.quality == "bad"]
    if args.record:
        _record(args, profile, report, len(bad))
    if bad:
        raise SystemExit(1)


def _record(
    args: argparse.Namespace, profile: DeviceProfile, report: ProbeReport, bad: int
) -> None:
    """The probe into the collector's provisioning audit (TRACE_API_KEY, role provisioner)."""
    if report.listened_s is not None:
        summary = f"{len(report.events)} item(s) in {report.listened_s:.1f} s"
    else:
        summary = f"{len(report.readings)} tag(s) read, {bad} bad"
    CollectorApi(args.api).call_json(
        "POST",
        "/api/v1/provisioning/probes",
        json={
            "device": profile.name,
            "protocol": profile.protocol,
            "profile_sha256": content_hash(canonical_json(profile.model_dump(mode="json"))),
            "where": socket.gethostname()[:200],
            "summary": summary,
        },
    )
    print(f"recorded in the collector's audit as probed by this key's holder ({summary})")


def add_parser(profile_sub: Any) -> None:
    probe_cmd = profile_sub.add_parser(
        "probe", help="read every tag of a profile once from the live device (on the line PC)"
    )
    probe_cmd.add_argument("file")
    probe_cmd.add_argument(
        "--seconds",
        type=float,
        default=5.0,
        help="how long to listen to an RFID reader (5), or to wait for a scan (scanner)",
    )
    probe_cmd.add_argument("--json", action="store_true")
    probe_cmd.add_argument(
        "--record", action="store_true", help="record the probe in the collector's audit"
    )
    probe_cmd.add_argument("--api", default=None, help="collector API URL (TRACE_API_URL)")
    probe_cmd.set_defaults(func=cmd_probe)
