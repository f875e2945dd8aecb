"""Credentials over HTTP, for admins: list, issue (the key is in the answer, once), revoke.
The same as `tracectl credential`, which needs no key and makes the first one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud_collector import auth
from cloud_collector.auth import Principal, Role
from cloud_collector.endpoints import Conn
from protocols.mqtt.contract import storable

router = APIRouter(
    prefix="/api/v1/credentials",
    tags=["credentials"],
    dependencies=[Depends(auth.require(Role.admin))],
)


class NewCredential(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    role: Role
    partner_id: str | None = Field(default=None, min_length=1, max_length=128)
    # For a partner: added to what the partner already has.
    customer_ids: list[str] = Field(default_factory=list, max_length=100)
    locations: list[str] = Field(default_factory=list, max_length=1000)
    replace: bool = False

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [storable(x) for x in value]
        return storable(value) if isinstance(value, str) else value


@router.get("")
async def list_credentials(
    conn: Conn, revoked: Annotated[bool, Query()] = False
) -> list[auth.Credential]:
    return await auth.list_credentials(conn, revoked)


@router.post("", status_code=201)
async def issue(body: NewCredential, request: Request, conn: Conn) -> auth.IssuedKey:
    """A new key; store it now, it is not shown again."""
    if body.replace:
        _not_your_own(request, body.name)
    if body.partner_id is None and (body.customer_ids or body.locations):
        raise HTTPException(422, "customer_ids and locations belong to a partner: add partner_id")
    try:
        async with conn.transaction():
            if body.partner_id is not None and body.role is Role.partner:
                await auth.set_partner(conn, body.partner_id, body.customer_ids, body.locations)
            issued = await auth.issue(conn, body.name, body.role, body.partner_id, body.replace)
    except auth.CredentialInForce as err:
        raise HTTPException(409, str(err)) from err
    except auth.CredentialError as err:
        raise HTTPException(422, str(err)) from err
    # A replaced key, or a partner's new locations, count from now in this process.
    _keyring(request).forget()
    return issued


def _keyring(request: Request) -> auth.Keyring:
    keyring: auth.Keyring = request.app.state.keyring
    return keyring


def _not_your_own(request: Request, name: str) -> None:
    """An admin cannot revoke over HTTP the key it calls with: one request must not lock the
    last admin out (another admin key, or tracectl on the server, can)."""
    caller: Principal = request.state.principal
    if caller.name == name:
        raise HTTPException(
            409,
            f"{name!r} is the credential this request is made with: revoke it with another "
            "admin key or with `tracectl credential revoke` on the server",
        )


@router.delete("/{name}")
async def revoke(name: str, request: Request, conn: Conn) -> dict[str, str]:
    _not_your_own(request, name)
    if not await auth.revoke(conn, name):
        raise HTTPException(404, f"no credential named {name!r} is in force")
    # Refused from now on in this process; other collectors within TRACE_API_KEY_CACHE_S.
    _keyring(request).forget()
    return {"revoked": name}
