"""Who may see a page: the API's own check (auth.require, the same roles, keys, sessions
and partners), with its refusals answered as pages. A page router's dependencies are
`page_of(...)`: the mark that a request is for a page first, then the check; the app's
handlers (installed by `install_handlers`) turn a 401 into the sign-in form and any other
refusal into a page that says why, and leave the JSON API's answers as they are."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse

from cloud_collector.auth import Role, require
from cloud_collector.pages.render import page
from cloud_collector.pages.session import signin_url


async def mark_page(request: Request) -> None:
    request.state.page = True


def page_of(*roles: Role) -> list[Any]:
    """A page router's dependencies: pages for `roles` (admin: all)."""
    return [Depends(mark_page), Depends(require(*roles))]


def _is_page(request: Request) -> bool:
    return bool(getattr(request.state, "page", False))


def _sendable(value: Any) -> Any:
    """`value` as JSON can carry it: a NaN or an infinity (which Python's JSON reader takes
    from a body, and a refusal quotes back as the input) as its text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _sendable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sendable(v) for v in value]
    return value


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def refused(request: Request, err: HTTPException) -> Response:
        if not _is_page(request):
            return await http_exception_handler(request, err)
        if err.status_code == 401:
            return RedirectResponse(signin_url(request), 303)
        detail = err.detail if isinstance(err.detail, str) else str(err.detail)
        return page(request, "refused.html", status=err.status_code, detail=detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> Response:
        if not _is_page(request):
            # FastAPI's own answer, which a NaN in the body would turn into a 500.
            errors = _sendable(jsonable_encoder(err.errors()))
            return JSONResponse(status_code=422, content={"detail": errors})
        detail = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in err.errors()
        )
        return page(request, "refused.html", status=422, detail=detail)
