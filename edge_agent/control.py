"""The edge's local HTTP control API: start and end batches, bind dock doors, read the
status and the quarantine.

An MES, a line HMI or `tracectl batch` calls it on the line PC. It listens on loopback by
default; exposing it on the plant network is a deliberate setting (TRACE_EDGE_CONTROL_HOST).

Every request must name this API in its Host header (a web page that rebinds its own DNS
name to 127.0.0.1 sends its own name, and is refused). Changes need the token of the token
file (edge_agent/control_token.py); reads need it too unless they come from this PC.
Request bodies use the message contract's own types, so what the contract would refuse is
answered 422 here and never reaches the outbox.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from device_profiles.sites import DockParty
from edge_agent.batch_context import ActiveBatch, BatchConflict
from edge_agent.batch_numbers import NoNumberingRule
from edge_agent.binding import Binder
from edge_agent.outbox import Outbox
from edge_agent.records import RecordRefused
from edge_agent.stations import StationError, Stations
from protocols.mqtt.contract import MAX_PARTIES, Identifier, Name

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})


@dataclass(frozen=True)
class ControlAccess:
    """Who may call the control API: the Host names it answers to, and the token."""

    token: str
    hosts: frozenset[str]  # lower-case Host header values, port included
    token_file: Path | None = None  # named in the 401's fix

    @classmethod
    def of(
        cls,
        token: str,
        host: str,
        port: int,
        names: Iterable[str] = (),
        token_file: Path | None = None,
    ) -> ControlAccess:
        """The configured host and `names`, plus the loopback names, each with the port
        (and alone on port 80, where clients may omit it)."""
        bases = set()
        for name in (host, *LOOPBACK_NAMES, *names):
            name = name.strip().lower()
            if ":" in name and not name.startswith("["):
                name = f"[{name}]"  # an IPv6 literal, as it appears in a Host header
            if name not in WILDCARDS:
                bases.add(name)
        hosts = {f"{b}:{port}" for b in bases}
        if port == 80:
            hosts |= bases
        return cls(token, frozenset(hosts), token_file)

    def authorised(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        )


def _from_this_pc(request: Request) -> bool:
    if request.client is None:
        return False
    try:
        return ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


class StartBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: Name | None = None  # None: the line's numbering rule makes it
    by: Name = "api"


class ActiveBatchOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_id: str
    batch_id: str
    started_at: datetime
    started_by: str

    @classmethod
    def of(cls, batch: ActiveBatch) -> ActiveBatchOut:
        return cls(**asdict(batch))


class BindDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["po", "desadv"]  # purchase order (receiving) or despatch advice (shipping)
    id: Name
    by: Name = "api"
    # Who the document names (the ERP's customer, supplier, ship-to place): the door's
    # events carry them as EPCIS trading parties.
    parties: list[DockParty] = Field(default_factory=list, max_length=MAX_PARTIES)


class DockDocumentOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dock_id: str
    type: str
    doc_id: str
    bound_at: datetime
    bound_by: str
    parties: list[DockParty] = []


class RefusalOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str
    epoch: str
    first_seq: int
    last_seq: int
    reason: str
    at: datetime


class QuarantinedOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str
    epoch: str
    seq: int
    record: dict[str, Any]  # as it was sent
    reason: str
    quarantined_at: datetime


class QuarantineOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int  # all quarantined records; `records` holds the newest `limit` of them
    last_refusal: RefusalOut | None
    records: list[QuarantinedOut]


def create_control_app(
    binder: Binder,
    status: Any,
    stations: Stations | None = None,
    *,
    access: ControlAccess,
    outbox: Outbox | None = None,
) -> FastAPI:
    """`status` is a zero-argument callable returning the agent's status document;
    `outbox` (default: the binder's) is where the quarantine is read."""
    app = FastAPI(title="Edge agent control", version="1")
    quarantine_box = outbox or binder.outbox
    allowed = ", ".join(sorted(access.hosts))
    where = f"the file {access.token_file}" if access.token_file else "the edge's token file"

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> Response:
        # FastAPI's own handler echoes the input as UTF-8 and fails (500) on a lone
        # surrogate; escaped JSON carries any text back.
        body = json.dumps({"detail": jsonable_encoder(err.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(RecordRefused)
    async def refused(request: Request, err: RecordRefused) -> Response:
        # What the body's types let through but the record it makes does not pass.
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        host = request.headers.get("host", "").strip().lower()
        if host not in access.hosts:
            return JSONResponse(
                {
                    "detail": f"Host {host[:100]!r} is not a name of this control API "
                    f"(it answers to {allowed}): call it by one of those, or add the name "
                    "to TRACE_EDGE_CONTROL_HOST_NAMES"
                },
                status_code=400,
            )
        open_read = request.method in SAFE_METHODS and _from_this_pc(request)
        if not open_read and not access.authorised(request.headers.get("authorization")):
            what = "changes" if request.method not in SAFE_METHODS else "reads from off this PC"
            return JSONResponse(
                {
                    "detail": f"{what} need the control token: send the content of "
                    f"{where} as 'Authorization: Bearer <token>' (tracectl on the line "
                    "PC does this itself when TRACE_EDGE_STATE_DIR, or "
                    "TRACE_EDGE_CONTROL_TOKEN_FILE, names the edge's)"
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    def _line(line_id: str) -> None:
        if line_id not in binder.context.lines:
            raise HTTPException(
                404,
                f"line {line_id!r} is not on this edge; "
                f"its lines: {', '.join(binder.context.lines)}",
            )

    @app.get("/api/v1/status")
    async def get_status() -> dict[str, Any]:
        return status()  # type: ignore[no-any-return]

    @app.get("/api/v1/quarantine")
    async def get_quarantine(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        stream: Identifier | None = None,
    ) -> QuarantineOut:
        """Records the collector refused for good, newest first, as they were sent."""
        refusal = quarantine_box.last_refusal
        return QuarantineOut(
            count=quarantine_box.stats().quarantined,
            last_refusal=RefusalOut(**asdict(refusal)) if refusal else None,
            records=[
                QuarantinedOut(**asdict(r)) for r in quarantine_box.quarantined(limit, stream)
            ],
        )

    @app.get("/api/v1/lines/{line_id}/batch")
    async def get_batch(line_id: str) -> ActiveBatchOut | None:
        _line(line_id)
        active = binder.context.active(line_id)
        return ActiveBatchOut.of(active) if active else None

    @app.put("/api/v1/lines/{line_id}/batch", status_code=201)
    async def start_batch(line_id: str, body: StartBatch) -> ActiveBatchOut:
        _line(line_id)
        try:
            return ActiveBatchOut.of(binder.start_batch(line_id, body.batch_id, body.by))
        except BatchConflict as err:
            raise HTTPException(409, str(err)) from err
        except NoNumberingRule as err:
            raise HTTPException(422, str(err)) from err

    @app.delete("/api/v1/lines/{line_id}/batch")
    async def end_batch(line_id: str, by: Annotated[Name, Query()] = "api") -> ActiveBatchOut:
        _line(line_id)
        try:
            return ActiveBatchOut.of(binder.end_batch(line_id, by))
        except BatchConflict as err:
            raise HTTPException(409, str(err)) from err

    def _stations() -> Stations:
        if stations is None:
            raise HTTPException(404, "this edge has no docks")
        return stations

    @app.get("/api/v1/docks/{dock_id}/document")
    async def get_document(dock_id: str) -> DockDocumentOut | None:
        try:
            doc = _stations().document(dock_id)
        except StationError as err:
            raise HTTPException(404, str(err)) from err
        return DockDocumentOut(**asdict(doc)) if doc else None

    @app.put("/api/v1/docks/{dock_id}/document", status_code=201)
    async def bind_document(dock_id: str, body: BindDocument) -> DockDocumentOut:
        try:
            doc = _stations().bind_document(dock_id, body.type, body.id, body.by, body.parties)
        except StationError as err:
            raise HTTPException(404, str(err)) from err
        return DockDocumentOut(**asdict(doc))

    @app.delete("/api/v1/docks/{dock_id}/document")
    async def release_document(dock_id: str) -> DockDocumentOut:
        try:
            doc = _stations().unbind_document(dock_id)
        except StationError as err:
            code = 404 if "not on this edge" in str(err) else 409
            raise HTTPException(code, str(err)) from err
        return DockDocumentOut(**asdict(doc))

    return app
