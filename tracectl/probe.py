"""`tracectl profile probe FILE`: run a profile against the live device before it goes live,
on the line PC; `tracectl profile probe --edge EDGE FILE|--device NAME`: the same, run by
that edge for the collector (role provisioner). Prints, per tag, where it was read, what the
device answered (registers, the node's value and status), the decoded value, unit and
quality, and the spec limits; for multi-register values, what the same registers would read
as under the other byte and word orders, so a wrong address, data type, word order or scale
is plain at a glance. An RFID reader is listened to for a few seconds; a scanner waits for
one scan. The probe itself is protocols/probe.py, which the edge runs too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from device_profiles.schema import ProfileError, UnreadableYaml, load_profile, read_yaml
from device_profiles.sites import canonical_json, content_hash
from protocols.mqtt.contract import ProbeResult
from protocols.probe import ProbeFailed, probe, result_of
from tracectl.collector_api import CollectorApi, CommandError
from tracectl.tables import safe, table


def _limits(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "-"
    return f"{'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"


def render(result: ProbeResult) -> list[str]:
    out = [f"device {safe(result.device)} ({result.protocol}):"]
    rows, notes = [], []
    for t in result.tags:
        value = t.text if t.text is not None else (None if t.value is None else f"{t.value:.6g}")
        check = "ok" if t.within_spec else ("OUT OF SPEC" if t.within_spec is False else "")
        if t.quality != "good":
            check = t.detail or t.quality
        limits = _limits(t.spec_low, t.spec_high)
        rows.append([t.tag, t.where, t.raw, value, t.unit, t.quality, limits, check])
        for alt in t.alternatives:
            mark = "  <- within spec" if t.within_spec is False and alt.within_spec else ""
            notes.append(f"  {safe(t.tag)}: as {alt.label}: {alt.value:.6g}{mark}")
    if rows:
        out.append(
            table(["TAG", "WHERE", "RAW", "VALUE", "UNIT", "QUALITY", "SPEC", "CHECK"], rows, "  ")
        )
    if notes:
        out.append("the same registers under other byte/word orders:")
        out += notes
    if result.listened_s is not None:
        out.append(f"  {result.items_seen} item(s) in {result.listened_s:.1f} s:")
        out += [f"    {safe(item)}" for item in result.items]
        if not result.items_seen:
            out.append(
                "    nothing: is a tag in the field / was a label scanned? Check the port, "
                "the baud rate and the reader's antennas"
            )
    return out


def _show(result: ProbeResult, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print("\n".join(render(result)))


def cmd_probe(args: argparse.Namespace) -> None:
    if args.edge is not None:
        _probe_through_edge(args)
        return
    if args.file is None:
        raise CommandError("name the profile FILE to probe (or --edge EDGE --device NAME)")
    if args.device is not None:
        raise CommandError("--device names a device of an edge's site: give --edge EDGE too")
    try:
        profile = load_profile(Path(args.file))
    except ProfileError as err:
        raise CommandError(f"{err.source}: " + "; ".join(err.problems)) from None
    # The drivers translate every library error into one line; the libraries' own log lines
    # of the same failure would only repeat it.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        report = asyncio.run(probe(profile, args.seconds))
    except ProbeFailed as err:
        raise CommandError(str(err)) from None
    sha256 = content_hash(canonical_json(profile.model_dump(mode="json")))
    result = result_of(report, profile, "line-pc", uuid.uuid4().hex, sha256)
    _show(result, args.json)
    if args.record:
        _record(args, result)
    if result.bad:
        raise SystemExit(1)


def _probe_through_edge(args: argparse.Namespace) -> None:
    """The edge probes; the collector relays (POST /api/v1/provisioning/edges/E/probe)."""
    if (args.file is None) == (args.device is None):
        raise CommandError("--edge probes either a profile FILE or --device NAME of its site")
    body: dict[str, Any] = {"seconds": args.seconds}
    if args.device is not None:
        body["device"] = args.device
    else:
        try:
            body["profile"] = read_yaml(Path(args.file))
        except UnreadableYaml as err:
            raise CommandError(f"{args.file}: {err}") from None
    answer = CollectorApi(args.api).call_json(
        "POST",
        f"/api/v1/provisioning/edges/{quote(args.edge, safe='')}/probe",
        json=body,
        timeout_s=args.seconds + 60,
    )
    result = ProbeResult.model_validate(answer)
    if result.error is not None:
        raise CommandError(f"edge {args.edge} probed {result.device}: {result.error}")
    _show(result, args.json)
    if result.bad:
        raise SystemExit(1)


def _record(args: argparse.Namespace, result: ProbeResult) -> None:
    """The probe into the collector's provisioning audit (TRACE_API_KEY, role provisioner)."""
    text = result.summary()
    CollectorApi(args.api).call_json(
        "POST",
        "/api/v1/provisioning/probes",
        json={
            "device": result.device,
            "protocol": result.protocol,
            "profile_sha256": result.profile_sha256,
            "where": socket.gethostname()[:200],
            "summary": text,
        },
    )
    print(f"recorded in the collector's audit as probed by this key's holder ({text})")


def add_parser(profile_sub: Any) -> None:
    probe_cmd = profile_sub.add_parser(
        "probe",
        help="read every tag of a profile once from the live device (here, on the line PC, "
        "or through an edge with --edge)",
    )
    probe_cmd.add_argument("file", nargs="?", help="the profile file")
    probe_cmd.add_argument(
        "--edge", help="probe through this edge (the collector relays; role provisioner)"
    )
    probe_cmd.add_argument("--device", help="with --edge: a device of the site the edge runs")
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
