"""Errors as the EPCIS REST binding answers them: RFC 7807 problem documents whose `type`
is one of the standard's exception names."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

TITLES: dict[str, str] = {
    "epcisException:ValidationException": "The document is not valid EPCIS",
    "epcisException:CaptureLimitExceededException": "Capture payload too large",
    "epcisException:QueryParameterException": "Invalid query parameter",
    "epcisException:QueryTooLargeException": "Query result too large",
    "epcisException:NoSuchResourceException": "No such resource",
    "epcisException:ImplementationException": "Not supported by this repository",
    "epcisException:SecurityException": "Not allowed for this credential",
}


class Problem(Exception):
    def __init__(self, status: int, kind: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.extra = status, kind, detail, extra

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {
            "type": self.kind,
            "title": TITLES.get(self.kind, self.kind),
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        return JSONResponse(
            body, status_code=self.status, media_type="application/problem+json", headers=headers
        )
