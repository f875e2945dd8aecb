"""`tracectl profile list|show|diff|create` and `tracectl site list|show|diff|validate|create|
push|rollback|audit`: the collector's provisioning registry (/api/v1/provisioning), with
TRACE_API_KEY (role provisioner to change, reader to look)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from device_profiles.schema import UnreadableYaml, read_yaml
from device_profiles.sites import SiteDocumentError, bundle_site_file, resolve_site
from tracectl.collector_api import CollectorApi, CommandError
from tracectl.tables import safe, table, when

Json = dict[str, Any]
BASE = "/api/v1/provisioning"


def _name(text: str) -> str:
    return quote(text, safe="")


def _versions_table(rows: list[Json]) -> str:
    return table(
        ["NAME", "VERSION", "CREATED", "AUTHOR", "PUSHED", "SHA256", "COMMENT"],
        [
            [
                r["name"],
                r["version"],
                when(r["created_at"]),
                r["author"],
                when(r["pushed_at"]) if r.get("pushed_at") else "-",
                r["sha256"][:12],
                (f"(restores {r['restores']}) " if r.get("restores") else "") + r["comment"],
            ]
            for r in rows
        ],
    )


def _print(body: Any, as_json: bool, text: str) -> None:
    print(json.dumps(body, indent=2) if as_json else text)


def cmd_list(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    path = f"{BASE}/{args.subject}s" + (f"/{_name(args.name)}" if args.name else "")
    body = api.get_json(path)
    empty = f"no {args.subject} in the registry: `tracectl {args.subject} create FILE` adds one"
    _print(body, args.json, _versions_table(body) if body else empty)


def cmd_show(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    if args.version is None:
        versions = api.get_json(f"{BASE}/{args.subject}s/{_name(args.name)}")
        args.version = versions[0]["version"]
    body = api.get_json(f"{BASE}/{args.subject}s/{_name(args.name)}/versions/{args.version}")
    if args.json:
        print(json.dumps(body, indent=2))
        return
    print(
        f"# {args.subject} {safe(body['name'])} version {body['version']}, "
        f"{when(body['created_at'])} by {safe(body['author'])}: {safe(body['comment'])}\n"
        f"# sha256 {body['sha256']}"
    )
    print(yaml.safe_dump(body["content"], sort_keys=False, allow_unicode=True), end="")


def cmd_diff(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    body = api.get_json(
        f"{BASE}/{args.subject}s/{_name(args.name)}/diff",
        params={"from": args.a, "to": args.b},
    )
    if args.json:
        print(json.dumps(body, indent=2))
        return
    for line in body["changes"]:
        print(f"* {safe(line)}")
    if body["diff"]:
        print()
        print(body["diff"], end="")


def _read_profile(path: Path) -> Any:
    try:
        return read_yaml(path)
    except UnreadableYaml as err:
        raise CommandError(f"{path}: {err}") from None


def _read_site(path: Path) -> Json:
    try:
        return bundle_site_file(path)
    except SiteDocumentError as err:
        raise CommandError(str(err)) from None


def _report_push(body: Json, what: str) -> None:
    v = body["version"]
    print(f"{what} {safe(v['name'])} version {v['version']} (sha256 {v['sha256'][:12]})")
    if body["pushed"]:
        print(
            f"pushed to edge {safe(v['name'])}: `tracectl edges {safe(v['name'])}` shows when "
            "it runs it, or why it refused it"
        )
    elif body.get("push_error"):
        print(f"tracectl: NOT pushed: {safe(body['push_error'])}", file=sys.stderr)
        raise SystemExit(1)


def cmd_create(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    path = Path(args.file)
    if args.subject == "profile":
        body = api.call_json(
            "POST",
            f"{BASE}/profiles",
            json={"content": _read_profile(path), "comment": args.comment},
        )
        print(
            f"profile {safe(body['name'])} version {body['version']} (sha256 {body['sha256'][:12]})"
        )
        return
    content = _read_site(path)
    edge = args.edge or content.get("edge_id")
    if not isinstance(edge, str):
        raise CommandError(f"{path}: no edge_id: name the edge in the file or with --edge")
    body = api.call_json(
        "POST",
        f"{BASE}/sites/{_name(edge)}",
        json={"content": content, "comment": args.comment, "push": not args.no_push},
    )
    _report_push(body, "site")


def cmd_site_validate(args: argparse.Namespace) -> None:
    """Checks a site file and every profile it names, here, as the edge will."""
    failed = 0
    for name in args.files:
        path = Path(name)
        try:
            site = resolve_site(_read_site(path), str(path), files_at=path.parent)
        except SiteDocumentError as err:
            failed += 1
            for problem in err.problems:
                print(f"{err.source}: {problem}")
            continue
        stations = site.stations()
        print(
            f"{path}: ok (edge {site.edge_id}, {len(stations)} station(s), "
            f"{len(site.devices)} device(s))"
        )
    if failed:
        print(f"{failed} of {len(args.files)} site files have errors", file=sys.stderr)
        raise SystemExit(1)


def cmd_push(args: argparse.Namespace) -> None:
    body = CollectorApi(args.api).call_json(
        "POST", f"{BASE}/sites/{_name(args.name)}/versions/{args.version}/push"
    )
    _report_push(body, "site")


def cmd_rollback(args: argparse.Namespace) -> None:
    body = CollectorApi(args.api).call_json(
        "POST",
        f"{BASE}/sites/{_name(args.name)}/rollback",
        json={"version": args.version, "comment": args.comment, "push": not args.no_push},
    )
    _report_push(body, f"rolled back to version {args.version} as")


def cmd_audit(args: argparse.Namespace) -> None:
    params: Json = {"limit": args.limit}
    if args.name:
        params |= {"subject": args.subject, "name": args.name}
    body = CollectorApi(args.api).get_json(f"{BASE}/audit", params=params)
    rows = [
        [when(a["at"]), a["actor"], a["action"], a["subject"], a["name"], a["version"], a["detail"]]
        for a in body
    ]
    text = table(["WHEN", "WHO", "WHAT", "OF", "NAME", "VERSION", "DETAIL"], rows)
    _print(body, args.json, text if body else "no provisioning activity recorded")


def _api(parser: argparse.ArgumentParser, api_url: str) -> None:
    parser.add_argument("--api", default=None, help=f"collector API URL (TRACE_API_URL, {api_url})")
    parser.add_argument("--json", action="store_true", help="the API's answer as it is")


def _common(sub: Any, subject: str, api_url: str) -> None:
    listing = sub.add_parser("list", help=f"{subject}s in the registry (or one's versions)")
    listing.add_argument("name", nargs="?")
    show = sub.add_parser("show", help=f"a {subject} version's content (default: the newest)")
    show.add_argument("name")
    show.add_argument("version", nargs="?", type=int)
    diff = sub.add_parser("diff", help="what changed between two versions")
    diff.add_argument("name")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int)
    create = sub.add_parser("create", help=f"a new {subject} version from a file")
    create.add_argument("file")
    create.add_argument("-m", "--comment", default="", help="why (kept with the version)")
    audit = sub.add_parser("audit", help="who changed, pushed, applied or refused what")
    audit.add_argument("name", nargs="?")
    audit.add_argument("--limit", type=int, default=50)
    for parser, func in (
        (listing, cmd_list),
        (show, cmd_show),
        (diff, cmd_diff),
        (create, cmd_create),
        (audit, cmd_audit),
    ):
        _api(parser, api_url)
        parser.set_defaults(func=func, subject=subject)
    if subject == "site":
        create.add_argument("--edge", help="the edge (default: the file's edge_id)")
        create.add_argument("--no-push", action="store_true", help="store it, push later")


def add_profile_commands(profile_sub: Any, api_url: str) -> None:
    _common(profile_sub, "profile", api_url)


def add_site_parser(sub: Any, api_url: str) -> None:
    site = sub.add_parser("site", help="edges' site configurations: versions, push, rollback")
    site_sub = site.add_subparsers(dest="site_command", required=True)
    _common(site_sub, "site", api_url)
    validate = site_sub.add_parser("validate", help="check site files here; exit 1 on errors")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_site_validate)
    push = site_sub.add_parser("push", help="publish a version to its edge (again)")
    push.add_argument("name", help="the edge")
    push.add_argument("version", type=int)
    rollback = site_sub.add_parser("rollback", help="make an earlier version current and push it")
    rollback.add_argument("name", help="the edge")
    rollback.add_argument("version", type=int)
    rollback.add_argument("-m", "--comment", default="")
    rollback.add_argument("--no-push", action="store_true")
    for parser, func in ((push, cmd_push), (rollback, cmd_rollback)):
        _api(parser, api_url)
        parser.set_defaults(func=func, subject="site")
