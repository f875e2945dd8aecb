"""The edge's local HTTP control API: start and end batches, read the status.

An MES, a line HMI or `tracectl batch` calls it on the line PC. It listens on loopback by
default; exposing it on the plant network is a deliberate setting (TRACE_EDGE_CONTROL_HOST).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.batch_context import ActiveBatch, BatchConflict
from edge_agent.binding import Binder
from edge_agent.stations import StationError, Stations


class StartBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: str = Field(min_length=1, max_length=128)
    by: str = Field(default="api", min_length=1, max_length=128)


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
    id: str = Field(min_length=1, max_length=128)
    by: str = Field(default="api", min_length=1, max_length=128)


class DockDocumentOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dock_id: str
    type: str
    doc_id: str
    bound_at: datetime
    bound_by: str


def create_control_app(binder: Binder, status: Any, stations: Stations | None = None) -> FastAPI:
    """`status` is a zero-argument callable returning the agent's status document."""
    app = FastAPI(title="Edge agent control", version="1")

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

    @app.delete("/api/v1/lines/{line_id}/batch")
    async def end_batch(line_id: str, by: str = "api") -> ActiveBatchOut:
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
            doc = _stations().bind_document(dock_id, body.type, body.id, body.by)
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
