"""GET /healthz: the API, its database and this process's consumer (cloud_collector/health.py
says what each status means). No key: a load balancer asks it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from cloud_collector import health

router = APIRouter()


@router.get(
    "/healthz",
    response_model=None,
    responses={200: {"model": health.Health}, 503: {"model": health.Health}},
)
async def healthz(request: Request) -> Response:
    """The API, its database and this process's consumer, each said separately; no key
    needed. 503 when the database does not answer (status down), 200 otherwise (ok, or
    degraded when the consumer or the API's pool is in trouble)."""
    state = request.app.state
    try:
        answer = await health.check(
            state.read_pool,
            state.write_pool,
            state.control_pool,
            state.ingest,
            state.keyring.lookups,
            read_control_pool=state.read_control_pool,
            retention=state.retention,
        )
    except Exception as err:  # /healthz says what is wrong; it never fails itself
        return JSONResponse({"status": "down", "error": f"{type(err).__name__}: {err}"[:500]}, 503)
    return Response(
        answer.model_dump_json(),
        status_code=503 if answer.status == "down" else 200,
        media_type="application/json",
    )
