"""The lines and edges page: where each edge stands (online, offline, silent, unknown, and
since when), its outbox (depth, oldest record's age, dropped, quarantined), its last ack,
alarms and version; each line's active batch (a link to its batch page); each device's
connection, last error and last values. What needs a shift lead first comes first
(`attention`).

The edges are the API's (edge_status.fleet, as GET /api/v1/edges answers them); the page's
script (static/lines.js) polls that route every REFRESH_S seconds and redraws the fleet in
the same order, so the page follows the edges without a reload. Every text an edge sends
(names, batches, errors, alarms, version) is shown escaped: Jinja's autoescape here, the
DOM's textContent in the script."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from cloud_collector import edge_status
from cloud_collector.auth import Role
from cloud_collector.edge_status import EdgeView
from cloud_collector.endpoints import Conn
from cloud_collector.pages.guard import page_of
from cloud_collector.pages.i18n import Translate, choose, translator
from cloud_collector.pages.render import page, plant_zone

router = APIRouter(include_in_schema=False, dependencies=page_of(Role.reader))

# How often the page asks the API again: a few of an edge's status intervals (10 s by
# default) would let a change wait too long; faster only loads the collector.
REFRESH_S = 5

# The order of attention (static/lines.js ATTENTION says the same): an edge that went
# away, one that stopped talking, one that talks about trouble, one never heard from.
OFFLINE, SILENT, TROUBLE, UNKNOWN, FINE = range(5)
# An outbox whose oldest record waits longer than this is not draining: the edge captures
# faster than the collector acknowledges, or its acks are lost. (An edge that keeps up
# sends within a second or two and has its acks back as fast.)
BACKLOG_S = 60.0


def trouble(edge: EdgeView) -> bool:
    """Whether an edge says something is wrong: an alarm, an outbox not draining (its
    oldest record older than BACKLOG_S), a device not connected, records dropped or held in
    quarantine, or only statuses the collector refused."""
    s = edge.status
    if edge.refused and edge.status is None:
        return True
    if s is None:
        return False
    return bool(
        s.alarms
        or (s.outbox_oldest_age_s or 0.0) > BACKLOG_S
        or s.outbox_dropped
        or s.quarantined
        or any(not d.connected for d in s.devices)
    )


def attention(edge: EdgeView) -> tuple[int, float, int, str]:
    """The fleet's sort key: offline, silent, in trouble, unknown, fine; within each, the
    outbox that has held its oldest record longest first (an outbox that drains stays
    young; one that grows gets old), then the deepest, then by edge id. An edge's status
    is one moment: its outbox's growth shows in the oldest record's age, not in depths
    compared over time (the page's script marks a depth that rose since its last poll)."""
    if edge.state == "offline":
        rank = OFFLINE
    elif edge.state == "silent":
        rank = SILENT
    elif edge.state == "unknown":
        rank = TROUBLE if trouble(edge) else UNKNOWN
    else:
        rank = TROUBLE if trouble(edge) else FINE
    s = edge.status
    oldest = (s.outbox_oldest_age_s or 0.0) if s else 0.0
    depth = (s.outbox_depth or 0) if s else 0
    return rank, -oldest, -depth, edge.edge_id


def duration(seconds: float | None, _: Translate) -> str:
    """A span as a shift lead reads it: the two largest units (static/lines.js `span`)."""
    if seconds is None:
        return ""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} {_('s')}"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if whole < 3600:
        return f"{minutes} {_('min')}"
    if whole < 86400:
        return f"{hours} {_('h')} {minutes % 60} {_('min')}"
    return f"{days} {_('d')} {hours % 24} {_('h')}"


def batch_href(batch: str) -> str:
    """The batch page of a line's active batch (the edge's batch name is its batch id)."""
    return "/batches/" + quote(batch, safe="")


@router.get("/lines")
async def lines_page(request: Request, conn: Conn) -> Response:
    edges = sorted(await edge_status.fleet(conn), key=attention)
    zone = plant_zone(request)
    _ = translator(choose(request))

    def clock(moment: datetime | None) -> str:
        return "" if moment is None else moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

    counts = {state: sum(e.state == state for e in edges) for state in STATES}
    return page(
        request,
        "lines.html",
        edges=edges,
        counts=counts,
        troubled={e.edge_id for e in edges if trouble(e)},
        clock=clock,
        span=lambda seconds: duration(seconds, _),
        batch_href=batch_href,
        refresh_s=REFRESH_S,
        now=datetime.now(UTC),
        labels=labels(_),
    )


STATES = ("online", "offline", "silent", "unknown")


def labels(_: Translate) -> dict[str, str]:
    """The words the page's script writes, in the page's language."""
    return {
        "online": _("online"),
        "offline": _("offline"),
        "silent": _("silent"),
        "unknown": _("unknown"),
        "since": _("since"),
        "since_first_seen": _("since first seen"),
        "last_status": _("last status"),
        "ago": _("ago"),
        "version": _("version"),
        "outbox": _("outbox"),
        "records": _("records"),
        "oldest": _("oldest"),
        "dropped": _("dropped"),
        "quarantined": _("quarantined"),
        "last_ack": _("last ack"),
        "never": _("never"),
        "alarms": _("Alarms"),
        "refused": _("statuses refused"),
        "not_registered": _("not registered"),
        "growing": _("growing"),
        "line": _("Line"),
        "active_batch": _("Active batch"),
        "started": _("Started"),
        "idle": _("idle"),
        "device": _("Device"),
        "station": _("Station"),
        "connection": _("Connection"),
        "connected": _("connected"),
        "disconnected": _("disconnected"),
        "last_read": _("Last read"),
        "failures": _("Failures"),
        "last_error": _("Last error"),
        "last_values": _("Last values"),
        "no_lines": _("No line reported."),
        "no_devices": _("No device reported."),
        "no_edges": _("No edge is registered or has sent a status yet."),
        "s": _("s"),
        "min": _("min"),
        "h": _("h"),
        "d": _("d"),
        "updated": _("Updated"),
        "refresh_failed": _("Refresh failed; the figures shown are from"),
    }
