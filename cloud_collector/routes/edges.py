"""The fleet: every edge's latest status as the collector keeps it (role reader or provisioner;
cloud_collector/edge_status.py says where it comes from and what `state` means)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from cloud_collector import edge_status
from cloud_collector.auth import Role, require
from cloud_collector.endpoints import Conn, json_response

# A provisioner looks too: the site version an edge runs, or refused and why, is here.
router = APIRouter(
    prefix="/api/v1/edges", dependencies=[Depends(require(Role.reader, Role.provisioner))]
)


def _keeper(request: Request) -> edge_status.KeeperState | None:
    counters = getattr(request.app.state, "edge_status", None)
    return edge_status.KeeperState.of(counters) if counters is not None else None


@router.get("", response_model=None, responses={200: {"model": edge_status.Fleet}})
async def list_edges(request: Request, conn: Conn) -> Response:
    """Every registered edge and every edge that sent a status: online, offline, silent or
    unknown; outbox depth and oldest age, last ack, alarms, version, each line's active
    batch, each device's last values and errors; and this process's keeper of the statuses
    (`keeper: null`: this collector keeps none, TRACE_EDGE_STATUS_USERNAME unset)."""
    edges = await edge_status.fleet(conn)
    return json_response(edge_status.Fleet(edges=edges, keeper=_keeper(request)))


@router.get("/{edge_id}", response_model=None, responses={200: {"model": edge_status.EdgeView}})
async def get_edge(edge_id: str, conn: Conn) -> Response:
    """One edge as GET /api/v1/edges lists it."""
    found = await edge_status.fleet(conn, edge_id)
    if not found:
        raise HTTPException(
            404,
            f"edge {edge_id[:200]!r} is unknown: it has no broker identity and sent no status "
            "(GET /api/v1/edges lists the edges; `tracectl edge add` registers one)",
        )
    return json_response(found[0])
