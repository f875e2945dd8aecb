"""`tracectl`: start and end batches on a line; trace a lot, list a recall, run recall cases
and mock-recall drills (`tracectl recall case --help`), list the batches and
the fleet's status, export FSMA 204 spreadsheets (from the collector's API, with
TRACE_API_KEY); check device profiles; run the demo line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

from device_profiles.schema import (
    DeviceProfile,
    ProfileError,
    RfidReaderProfile,
    SerialScannerProfile,
    WedgeScannerProfile,
    json_schema,
    load_profile,
)
from protocols.profile import Tagged
from tracectl import (
    batches,
    broker,
    credentials,
    export,
    fleet,
    genealogy,
    probe,
    provisioning,
    recall_cases,
)
from tracectl.collector_api import CollectorApi, CommandError
from tracectl.parameters import print_parameters

EDGE_URL = "http://127.0.0.1:8100"
API_URL = "http://127.0.0.1:8000"


def _fail(message: str) -> None:
    print(f"tracectl: {message}", file=sys.stderr)
    raise SystemExit(1)


def _call(
    method: str,
    url: str,
    key_hint: str = "tracectl sends the key in TRACE_API_KEY",
    **kwargs: object,
) -> httpx.Response:
    try:
        response = httpx.request(method, url, timeout=10, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as err:
        _fail(f"cannot reach {url}: {err} (is the service running? check --edge/--api)")
        raise
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if response.status_code == 401:
            detail = f"{detail} ({key_hint})"
        _fail(f"{method} {url} answered {response.status_code}: {detail}")
    return response


def _edge_call(method: str, url: str, **kwargs: object) -> httpx.Response:
    """A call to the edge's control API with the token of the edge's token file (the same
    settings as the edge: TRACE_EDGE_STATE_DIR, TRACE_EDGE_CONTROL_TOKEN_FILE)."""
    from edge_agent.control_token import ControlTokenError, read_token
    from edge_agent.settings import EdgeSettings

    path = EdgeSettings().token_file
    try:
        headers = {"Authorization": f"Bearer {read_token(path)}"}
    except ControlTokenError as err:
        if method == "GET":
            headers = {}  # reads on the line PC need no token
        else:
            _fail(str(err))
            raise
    return _call(
        method,
        url,
        key_hint=f"tracectl sent the token of {path}: is it the edge's?",
        headers=headers,
        **kwargs,
    )


def cmd_batch(args: argparse.Namespace) -> None:
    url = f"{args.edge}/api/v1/lines/{args.line}/batch"
    if args.action == "start":
        # Without BATCH, the edge makes the id by the line's numbering rule.
        body = _edge_call("PUT", url, json={"batch_id": args.batch, "by": args.by}).json()
        print(f"line {body['line_id']}: batch {body['batch_id']} started at {body['started_at']}")
    elif args.action == "end":
        body = _edge_call("DELETE", url, params={"by": args.by}).json()
        print(f"line {body['line_id']}: batch {body['batch_id']} ended")
    else:
        body = _edge_call("GET", url).json()
        print(
            f"line {args.line}: "
            + (f"batch {body['batch_id']} since {body['started_at']}" if body else "idle")
        )


def cmd_dock(args: argparse.Namespace) -> None:
    url = f"{args.edge}/api/v1/docks/{args.dock}/document"
    if args.action == "bind":
        if not (args.type and args.id):
            _fail("dock bind needs the document: tracectl dock bind DOCK po|desadv ID")
        body = _edge_call("PUT", url, json={"type": args.type, "id": args.id, "by": args.by}).json()
        print(f"dock {body['dock_id']}: bound to {body['type']} {body['doc_id']}")
    elif args.action == "release":
        body = _edge_call("DELETE", url).json()
        print(f"dock {body['dock_id']}: released from {body['type']} {body['doc_id']}")
    else:
        body = _edge_call("GET", url).json()
        print(
            f"dock {args.dock}: " + (f"{body['type']} {body['doc_id']}" if body else "no document")
        )


def cmd_parameters(args: argparse.Namespace) -> None:
    body = CollectorApi(args.api).get_json(
        f"/api/v1/batches/{genealogy.lot_path(args.batch)}/parameters"
    )
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print_parameters(body)


def _contents(profile: DeviceProfile) -> str:
    """What a profile declares, in a technician's words."""
    if isinstance(profile, RfidReaderProfile):
        return f"{len(profile.antennas)} antennas"
    if isinstance(profile, SerialScannerProfile | WedgeScannerProfile):
        return f"{len(profile.rules)} scan rules"
    return f"{len(profile.tags)} tags" if isinstance(profile, Tagged) else profile.protocol


def cmd_profile_validate(args: argparse.Namespace) -> None:
    failed = 0
    for path in args.files:
        try:
            profile = load_profile(Path(path))
        except ProfileError as err:
            failed += 1
            for problem in err.problems:
                print(f"{err.source}: {problem}")
            continue
        print(f"{path}: ok ({profile.protocol}, {_contents(profile)})")
    if failed:
        print(f"{failed} of {len(args.files)} profiles have errors", file=sys.stderr)
        raise SystemExit(1)


def cmd_profile_schema(args: argparse.Namespace) -> None:
    print(json.dumps(json_schema(), indent=2, sort_keys=True))


def cmd_decode(args: argparse.Namespace) -> None:
    from tracectl.decode import decode_barcode, decode_epc

    decode = decode_epc if args.what == "epc" else decode_barcode
    raise SystemExit(decode(args.value, args.json))


def cmd_demo(args: argparse.Namespace) -> None:
    from tracectl.demo import run

    raise SystemExit(run(seconds=args.seconds))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tracectl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    batch = sub.add_parser("batch", help="start, end or show the active batch of a line")
    batch.add_argument("action", choices=["start", "end", "show"])
    batch.add_argument("line")
    batch.add_argument("batch", nargs="?")
    batch.add_argument("--by", default="tracectl", help="who starts or ends it (operator id)")
    batch.add_argument("--edge", default=EDGE_URL, help=f"edge agent control URL ({EDGE_URL})")
    batch.set_defaults(func=cmd_batch)

    dock = sub.add_parser("dock", help="bind a dock door to a purchase order or a shipment")
    dock.add_argument("action", choices=["bind", "release", "show"])
    dock.add_argument("dock")
    dock.add_argument("type", nargs="?", choices=["po", "desadv"])
    dock.add_argument("id", nargs="?")
    dock.add_argument("--by", default="tracectl")
    dock.add_argument("--edge", default=EDGE_URL, help=f"edge agent control URL ({EDGE_URL})")
    dock.set_defaults(func=cmd_dock)

    params = sub.add_parser("parameters", help="process parameters recorded for a batch")
    params.add_argument("batch")
    params.add_argument("--api", default=None, help=f"collector API URL (TRACE_API_URL, {API_URL})")
    params.add_argument("--json", action="store_true")
    params.set_defaults(func=cmd_parameters)

    profile = sub.add_parser("profile", help="device profiles")
    profile_sub = profile.add_subparsers(dest="profile_command", required=True)
    validate = profile_sub.add_parser("validate", help="check profile files; exit 1 on any error")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_profile_validate)
    schema = profile_sub.add_parser("schema", help="print the profiles' JSON Schema")
    schema.set_defaults(func=cmd_profile_schema)
    provisioning.add_profile_commands(profile_sub, API_URL)
    probe.add_parser(profile_sub)
    provisioning.add_site_parser(sub, API_URL)

    decode = sub.add_parser("decode", help="what an RFID tag or a barcode label says")
    decode.add_argument("what", choices=["epc", "barcode"])
    decode.add_argument("value", help="the tag's EPC in hex, or the scanned text")
    decode.add_argument("--json", action="store_true")
    decode.set_defaults(func=cmd_decode)

    genealogy.add_parsers(sub, API_URL)
    batches.add_parser(sub, API_URL)
    export.add_parser(sub, API_URL)
    fleet.add_parser(sub, API_URL)
    credentials.add_parser(sub)
    broker.add_parsers(sub)

    demo = sub.add_parser("demo", help="run a simulated line into the local services")
    demo.add_argument("--seconds", type=float, default=15.0)
    demo.set_defaults(func=cmd_demo)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["recall", "case"]:  # `recall LOT` takes any word as a lot: cases first
        args = recall_cases.parser(API_URL).parse_args(argv[2:])
    else:
        args = parser.parse_args(argv)
    try:
        args.func(args)
    except CommandError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        print("tracectl: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
