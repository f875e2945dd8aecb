"""A partner's page: the lots of ours shipped to it, exactly as the API lets a partner key
see them (auth.visible_lots, the same query the EPCIS routes filter by), and the way to
its EPCIS events. A partner's session is refused by every other page, as its key is by
the trace and recall routes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cloud_collector import auth
from cloud_collector.auth import Principal, Role
from cloud_collector.endpoints import Conn
from cloud_collector.pages.guard import page_of
from cloud_collector.pages.render import page

router = APIRouter(include_in_schema=False, dependencies=page_of(Role.partner))


@router.get("/partner")
async def partner_page(request: Request, conn: Conn) -> Response:
    principal: Principal = request.state.principal
    lots = await auth.visible_lots(conn, principal.partner_id) if principal.partner_id else []
    return page(request, "partner.html", lots=lots)
