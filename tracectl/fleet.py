"""`tracectl edges`: the fleet's status as the collector keeps it (GET /api/v1/edges): which
edge is online and capturing, which is buffering, each line's batch, each device's last
values and errors."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from tracectl.collector_api import CollectorApi
from tracectl.tables import ago, duration, quantity, safe, table, when

Json = dict[str, Any]


def _since(edge: Json) -> str:
    if edge["state"] == "unknown":
        return "never heard from" if not edge["refused"] else "only refused statuses"
    if edge["state"] == "silent":
        return f"last status {ago(edge['age_s'])}"
    if edge.get("state_since"):
        return f"since {when(edge['state_since'])}"
    return f"so when first seen, {ago(edge['age_s'])}"


def fleet_table(edges: list[Json]) -> str:
    rows = []
    for e in edges:
        s = e.get("status") or {}
        rows.append(
            [
                e["edge_id"],
                e["state"].upper() if e["state"] != "online" else "online",
                _since(e),
                s.get("version"),
                s.get("outbox_depth"),
                duration(s["outbox_oldest_age_s"]) if s.get("outbox_oldest_age_s") else None,
                ago(s.get("last_ack_at")) if s.get("last_ack_at") else None,
                len(s.get("alarms", [])) + (1 if e["refused"] else 0),
            ]
        )
    return table(
        ["EDGE", "STATE", "SINCE", "VERSION", "OUTBOX", "OLDEST", "LAST ACK", "ALARMS"], rows
    )


def edge_details(e: Json) -> list[str]:
    s = e.get("status") or {}
    out = [f"edge {safe(e['edge_id'])}: {e['state']} ({_since(e)})"]
    if not e["registered"]:
        out.append("  ! no broker identity in force: `tracectl edge add` registers it")
    if e.get("received_at"):
        out.append(
            f"  last status {ago(e['age_s'])} (edge clock {when(e['status_time'])}), "
            f"version {safe(s.get('version'))}"
            + ("" if e["state"] == "online" else "; what follows is as of then")
        )
    if s:
        out.append(
            f"  outbox {safe(s.get('outbox_depth'))} record(s), oldest "
            f"{duration(s.get('outbox_oldest_age_s'))}, "
            f"dropped {safe(s.get('outbox_dropped'))}, quarantined {safe(s.get('quarantined'))}; "
            f"last ack {ago(s.get('last_ack_at'))}"
        )
    for line in s.get("lines", []):
        batch = (
            f"batch {safe(line['batch'])} since {when(line.get('batch_started_at'))}"
            if line.get("batch")
            else "idle"
        )
        out.append(f"  line {safe(line['line'])}: {batch}")
    for d in s.get("devices", []):
        state = "connected" if d["connected"] else "NOT CONNECTED"
        if d.get("offline_since"):
            state = f"OFFLINE since {when(d['offline_since'])}"
        out.append(
            f"  device {safe(d['device'])} ({safe(d['station'])}): {state}, last read "
            f"{ago(d.get('last_read_at'))}, {d.get('failures', 0)} failure(s)"
        )
        if d.get("last_error"):
            out.append(f"    last error: {safe(d['last_error'])}")
        values = [
            f"{safe(v['tag'])}={quantity(v.get('value'), v.get('unit'))}"
            + ("" if v.get("quality", "good") == "good" else f" ({safe(v['quality'])})")
            for v in d.get("values", [])
        ]
        if values:
            out.append(f"    {', '.join(values)}")
    for alarm in s.get("alarms", []):
        out.append(f"  ! {safe(alarm)}")
    if e["refused"]:
        out.append(
            f"  ! {e['refused']} status(es) refused, the last {ago(e['last_refused_at'])}: "
            f"{safe(e['last_refused_reason'])}"
        )
    return out


def cmd_edges(args: argparse.Namespace) -> None:
    api = CollectorApi(args.api)
    if args.edge:
        edge = api.get_json(f"/api/v1/edges/{quote(args.edge, safe='')}")
        print(json.dumps(edge, indent=2) if args.json else "\n".join(edge_details(edge)))
        return
    body = api.get_json("/api/v1/edges")
    if args.json:
        print(json.dumps(body, indent=2))
        return
    edges = body["edges"]
    if not edges:
        print("no edges: none is registered (`tracectl edge add EDGE`) and none sent a status")
    else:
        print(fleet_table(edges))
        for edge in edges:
            if edge.get("status") or edge["refused"]:
                print()
                print("\n".join(edge_details(edge)))
    keeper = body.get("keeper")
    if keeper is None:
        if not any(e.get("received_at") for e in edges):
            print(
                "\nno status has arrived: is a collector keeping edge status? It needs an "
                "identity of its own: `tracectl broker add NAME --kind collector`, then "
                "TRACE_EDGE_STATUS_USERNAME / TRACE_EDGE_STATUS_PASSWORD for the collector"
            )
    elif not keeper["connected"]:
        print(f"\n! this collector's status keeper is not connected: {safe(keeper['last_error'])}")


def add_parser(sub: argparse._SubParsersAction, api_url: str) -> None:  # type: ignore[type-arg]
    edges = sub.add_parser(
        "edges", help="fleet status: each edge online or not, outbox, lines, devices, alarms"
    )
    edges.add_argument("edge", nargs="?", help="one edge in detail")
    edges.add_argument("--api", default=None, help=f"collector API URL (TRACE_API_URL, {api_url})")
    edges.add_argument("--json", action="store_true", help="the API's answer as it is")
    edges.set_defaults(func=cmd_edges)
