"""Topic layout. An edge publishes only under trace/v1/edges/{its id}/ (the broker ACL
enforces it, and the collector checks the payload's edge id against the topic)."""

from __future__ import annotations

ROOT = "trace/v1/edges"
COLLECTORS = "trace/v1/collectors"
SHARE_GROUP = "collectors"


def data(edge_id: str, stream: str) -> str:
    return f"{ROOT}/{edge_id}/data/{stream}"


def ack(edge_id: str) -> str:
    return f"{ROOT}/{edge_id}/ack"


def status(edge_id: str) -> str:
    return f"{ROOT}/{edge_id}/status"


def all_data() -> str:
    """Every edge's data topics (a topic filter)."""
    return f"{ROOT}/+/data/+"


def data_subscription(share_group: str = SHARE_GROUP) -> str:
    """Collectors share the data subscription (MQTT v5), so N of them split the load."""
    return f"$share/{share_group}/{all_data()}"


def parse_data(topic: str) -> tuple[str, str]:
    """(edge_id, stream) of a data topic; ValueError names the topic otherwise."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:3]) != ROOT or parts[4] != "data":
        raise ValueError(f"topic {topic!r} is not {ROOT}/<edge_id>/data/<stream>")
    return parts[3], parts[5]


def config(edge_id: str) -> str:
    """Where an edge will read the configuration pushed to it (everything below this)."""
    return f"{ROOT}/{edge_id}/config"


def collector_status(collector_id: str) -> str:
    """Where a collector says it is online or offline (retained; its will when it dies)."""
    return f"{COLLECTORS}/{collector_id}/status"


def all_collector_status() -> str:
    """Every collector's status (a topic filter): edges watch it to resend at once what a
    collector that went offline held."""
    return f"{COLLECTORS}/+/status"


def is_collector_status(topic: str) -> bool:
    parts = topic.split("/")
    return len(parts) == 5 and "/".join(parts[:3]) == COLLECTORS and parts[4] == "status"


def holds() -> str:
    """The lots on hold, for every edge: one retained HoldSet the collector replaces whenever
    a hold is put or released (edges read it, collectors write it: broker ACL)."""
    return "trace/v1/holds"


def config_site(edge_id: str) -> str:
    """The site configuration version pushed to an edge (retained)."""
    return f"{config(edge_id)}/site"


def probe_request(edge_id: str) -> str:
    """A probe asked of an edge by a collector (not retained: a probe is for now or never)."""
    return f"{ROOT}/{edge_id}/probe/request"


def probe_result(edge_id: str) -> str:
    """What the edge's probe found, for the collector that asked (by request id)."""
    return f"{ROOT}/{edge_id}/probe/result"
