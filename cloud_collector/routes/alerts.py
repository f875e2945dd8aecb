"""Alerts over HTTP: the alerts raised (roles reader, quality) and their acknowledgement
(quality); the rules that raise them, the targets they go to and the deliveries, dead
letters included (admin). cloud_collector/alerts says what raises and delivers them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import AfterValidator, Field

from cloud_collector.alerts import delivery, raised, rules, targets
from cloud_collector.auth import Principal, Role, require
from cloud_collector.endpoints import Conn
from protocols.mqtt.contract import storable
from protocols.strict import Strict

router = APIRouter(prefix="/api/v1", tags=["alerts"])

LOOK = [Depends(require(Role.reader, Role.quality))]
ACKNOWLEDGE = [Depends(require(Role.quality))]
ADMIN = [Depends(require(Role.admin))]
Limit = Annotated[int, Query(ge=1, le=10_000)]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _who(request: Request) -> str:
    principal: Principal = request.state.principal
    return principal.name


class Acknowledgement(Strict):
    note: Annotated[str, Field(max_length=2000), AfterValidator(storable)] | None = None


@router.get("/alerts", dependencies=LOOK)
async def list_alerts(
    conn: Conn,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    state: raised.AlertState = "all",
    line: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 1000,
) -> list[raised.Alert]:
    """Alerts recorded, newest first. `kind`: excursion, qc_failed, device_offline,
    outbox_alarm, gap_found, held_lot_at_door (a held lot read at a shipping door), or a
    kind another part raises; `since`: raised at or after that time, with its UTC offset;
    `state`: open (not cleared), unacknowledged, cleared or all; `line`: of that line."""
    if since is not None and since.tzinfo is None:
        raise HTTPException(
            422,
            "since needs its UTC offset (e.g. 2026-12-02T08:00:00Z): a time without one "
            "means a different instant in each plant's time zone",
        )
    for name, value in (("kind", kind), ("line", line)):
        if value is not None and "\x00" in value:
            raise HTTPException(422, f"{name} contains a NUL character: no alert has one")
    return await raised.alerts(conn, kind, since, limit, state, line)


@router.post("/alerts/{alert_id}/acknowledge", dependencies=ACKNOWLEDGE)
async def acknowledge_alert(
    alert_id: Id, body: Acknowledgement, request: Request, conn: Conn
) -> raised.Alert:
    """Mark the alert seen (the key's name is kept as who, with the note). 409 if it was
    acknowledged already (the answer names by whom)."""
    try:
        done = await raised.acknowledge(conn, alert_id, _who(request), body.note)
    except raised.AlreadyAcknowledged as err:
        raise HTTPException(409, str(err)) from err
    if done is None:
        raise HTTPException(404, f"no alert {alert_id}: GET /api/v1/alerts lists them")
    return done


@router.get("/alert-rules", dependencies=ADMIN)
async def list_rules(conn: Conn) -> list[rules.Rule]:
    """Every alert rule, enabled or not."""
    return await rules.rules(conn)


@router.post("/alert-rules", status_code=201, dependencies=ADMIN)
async def create_rule(body: rules.RuleRequest, request: Request, conn: Conn) -> rules.Rule:
    """A rule: `condition.kind` and its parameters (cloud_collector/alerts/rules.py). It
    raises alerts for what happens from now on. 409 if the name is taken."""
    try:
        return await rules.create(conn, body, _who(request))
    except rules.NameTaken as err:
        raise HTTPException(409, str(err)) from err


@router.put("/alert-rules/{rule_id}", dependencies=ADMIN)
async def replace_rule(rule_id: Id, body: rules.RuleRequest, conn: Conn) -> rules.Rule:
    """Change a rule (`enabled: false` pauses it); alerts it raised stay."""
    try:
        rule = await rules.replace(conn, rule_id, body)
    except rules.NameTaken as err:
        raise HTTPException(409, str(err)) from err
    if rule is None:
        raise HTTPException(404, f"no alert rule {rule_id}: GET /api/v1/alert-rules lists them")
    return rule


@router.delete("/alert-rules/{rule_id}", status_code=204, dependencies=ADMIN)
async def delete_rule(rule_id: Id, conn: Conn) -> None:
    """Delete a rule; the alerts it raised stay."""
    if not await rules.delete(conn, rule_id):
        raise HTTPException(404, f"no alert rule {rule_id}: GET /api/v1/alert-rules lists them")


@router.get("/alert-targets", dependencies=ADMIN)
async def list_targets(conn: Conn) -> list[targets.Target]:
    """Webhooks and e-mail recipients (webhook secrets are never listed)."""
    return await targets.targets(conn)


@router.post("/alert-targets", status_code=201, dependencies=ADMIN)
async def create_target(
    body: targets.TargetRequest, request: Request, conn: Conn
) -> targets.CreatedTarget:
    """A webhook (`url`, `secret` or one made for it, answered here only) or e-mail
    recipients (`email_to`; sent when a collector has TRACE_SMTP_HOST), with the alert
    kinds and lines it gets. It gets the alerts raised from now on. 409: name taken."""
    try:
        return await targets.create(conn, body, _who(request))
    except targets.NameTaken as err:
        raise HTTPException(409, str(err)) from err


@router.delete("/alert-targets/{target_id}", status_code=204, dependencies=ADMIN)
async def delete_target(target_id: Id, conn: Conn) -> None:
    """Delete a target and its deliveries."""
    if not await targets.delete(conn, target_id):
        raise HTTPException(
            404, f"no alert target {target_id}: GET /api/v1/alert-targets lists them"
        )


@router.get("/alert-deliveries", dependencies=ADMIN)
async def list_deliveries(
    conn: Conn,
    state: delivery.DeliveryState | None = None,
    target: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    alert: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Limit = 1000,
) -> list[delivery.Delivery]:
    """Deliveries, newest first, with attempts and last error (`state=dead`: the dead
    letters, given up after their target's max attempts)."""
    return await delivery.deliveries(conn, state, target, alert, limit)


@router.post("/alert-deliveries/{delivery_id}/redeliver", status_code=202, dependencies=ADMIN)
async def redeliver(delivery_id: Id, conn: Conn) -> dict[str, int]:
    """Send a dead (or delivered) delivery again, from its first attempt. 409 if it waits
    to be sent anyway."""
    try:
        found = await delivery.redeliver(conn, delivery_id)
    except delivery.StillPending as err:
        raise HTTPException(409, str(err)) from err
    if not found:
        raise HTTPException(
            404, f"no alert delivery {delivery_id}: GET /api/v1/alert-deliveries lists them"
        )
    return {"delivery_id": delivery_id}
