"""The edge's local HTTP control API: start and end batches, read the status.

An MES, a line HMI or `tracectl batch` calls it on the line PC. It listens on loopback by
default; exposing it on the plant network is a deliberate setting (TRACE_EDGE_CONTROL_HOST).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.batch_context import ActiveBatch, BatchConflict
from edge_agent.binding import Binder


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


def create_control_app(binder: Binder, status: Any) -> FastAPI:
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

    return app
