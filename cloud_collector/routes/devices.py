"""A device's history across lines (role reader)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime

from cloud_collector import placements
from cloud_collector.endpoints import READ, Conn, Settings

router = APIRouter(prefix="/api/v1/devices", dependencies=READ)


@router.get("/{device}/placements")
async def device_placements(
    device: str,
    conn: Conn,
    settings: Settings,
    start: Annotated[AwareDatetime, Query(alias="from")],
    end: Annotated[AwareDatetime, Query(alias="to")],
    edge: Annotated[str | None, Query(max_length=128)] = None,
) -> list[placements.Placement]:
    """Where the device was read, one period per stretch at one line or dock door (of
    `edge`, else of every edge with a device of this name), with its readings and the
    batches they were bound to: a device moved to another line shows both lines' periods.
    Times with their UTC offset; at most TRACE_CONDITION_MAX_DAYS days (31 unless set), the
    longest range a query over the readings looks at."""
    days = (end - start) / timedelta(days=1)
    if days > settings.condition_max_days or days <= 0:
        raise HTTPException(
            422,
            f"the time range from {start.isoformat()} to {end.isoformat()} is {days:.1f} "
            f"days: give `to` after `from`, at most {settings.condition_max_days} days "
            "(TRACE_CONDITION_MAX_DAYS); split a longer range",
        )
    return await placements.placements(conn, device, start, end, edge)
