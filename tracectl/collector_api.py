"""tracectl's client of the collector's HTTP API: the key and the URL from TRACE_API_KEY and
TRACE_API_URL, and every way a call can fail said as one line with the fix (never a
traceback): no key, a key refused or of the wrong role, the API unreachable, an answer that
is not what the API answers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud_collector.settings import plant_zone_named
from protocols.mqtt.connection import ENV_FILE

DEFAULT_URL = "http://127.0.0.1:8000"


class CommandError(Exception):
    """A command that cannot do what was asked; the message says why and the fix (tracectl
    prints it as one line and exits 1)."""


class ApiError(CommandError):
    """A call that did not give the answer asked for; the message says why and the fix."""


class ApiSettings(BaseSettings):
    """TRACE_API_KEY: the key tracectl sends (`tracectl credential add`); TRACE_API_URL: the
    collector's API (default http://127.0.0.1:8000); TRACE_PLANT_TIMEZONE: the plant's time
    zone, the pages' own setting (tracectl prints times and exports dates in it)."""

    model_config = SettingsConfigDict(env_prefix="TRACE_", env_file=ENV_FILE, extra="ignore")
    api_key: str | None = None
    api_url: str = DEFAULT_URL
    # A streamed export may take the collector's export statement timeout (600 s) to start.
    api_timeout_s: float = Field(default=30.0, gt=0)
    plant_timezone: str = "UTC"

    @field_validator("plant_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return plant_zone_named(value)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500].strip() or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict) and "message" in detail:
        detail = (
            detail["message"]
            + "".join(
                f"\n  candidate: {json.dumps(c, ensure_ascii=False)}"
                for c in detail.get("candidates", [])
            )
            + "".join(f"\n  {p}" for p in detail.get("problems", []))
        )
    elif not isinstance(detail, str):
        detail = json.dumps(detail, ensure_ascii=False)[:1000]
    return str(detail)


class CollectorApi:
    def __init__(self, url: str | None = None, settings: ApiSettings | None = None) -> None:
        self.settings = settings or ApiSettings()
        self.url = (url or self.settings.api_url).rstrip("/")

    def _check_key(self) -> None:
        if not self.settings.api_key:
            raise ApiError(
                "TRACE_API_KEY is not set: the collector's API needs a key. Issue one with "
                "`tracectl credential add NAME --role reader` (on a host that reaches the "
                "database; `make demo` prints one) and `export TRACE_API_KEY=...`"
            )

    def _refused(self, method: str, path: str, response: httpx.Response) -> ApiError:
        code, detail = response.status_code, _detail(response)
        where = f"{method} {self.url}{path}"
        if code == 401:
            return ApiError(
                f"the collector refused the key in TRACE_API_KEY ({detail}): it is mistyped, "
                "revoked or of another collector's database; `tracectl credential list` "
                "shows the keys in force by their first characters"
            )
        if code == 403:
            return ApiError(
                f"the key in TRACE_API_KEY may not do this ({detail}): {where} needs a key "
                "of the role named there (to read: role reader; to change profiles and sites: "
                "role provisioner)"
            )
        return ApiError(f"{where} answered {code}: {detail}")

    def _unreachable(self, err: httpx.HTTPError) -> ApiError:
        return ApiError(
            f"cannot reach the collector's API at {self.url} ({type(err).__name__}: {err}): "
            "is the collector running (`cloud-collector run`; `make demo` starts one)? "
            "Another address: TRACE_API_URL or --api"
        )

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.call_json("GET", path, params=params)

    def call_json(
        self, method: str, path: str, timeout_s: float | None = None, **kwargs: Any
    ) -> Any:
        """`timeout_s`: a call that waits on purpose (a probe through an edge) past the usual."""
        self._check_key()
        try:
            response = httpx.request(
                method,
                f"{self.url}{path}",
                headers=self.settings.headers(),
                timeout=timeout_s or self.settings.api_timeout_s,
                **kwargs,
            )
        except httpx.HTTPError as err:
            raise self._unreachable(err) from None
        if response.status_code >= 400:
            raise self._refused(method, path, response)
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                f"{method} {self.url}{path} answered with no JSON: is {self.url} the "
                "collector's API (TRACE_API_URL)?"
            ) from None

    @contextlib.contextmanager
    def stream(
        self, path: str, params: dict[str, Any] | None = None, read_timeout_s: float = 660.0
    ) -> Iterator[httpx.Response]:
        """A GET whose answer is read as it arrives (an export)."""
        self._check_key()
        timeout = httpx.Timeout(self.settings.api_timeout_s, read=read_timeout_s)
        try:
            with httpx.stream(
                "GET",
                f"{self.url}{path}",
                params=params,
                headers=self.settings.headers(),
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refused("GET", path, response)
                yield response
        except httpx.HTTPError as err:
            raise self._unreachable(err) from None
