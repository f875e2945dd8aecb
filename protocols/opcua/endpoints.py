"""Which of a server's endpoints the profile asks for, and whether to trust its certificate.

Pure decisions on what GetEndpoints returned, made before the session is opened: a profile
that asks for something the server does not offer fails here with what it does offer,
instead of later with a timeout or a refused channel.
"""

from __future__ import annotations

import logging

from asyncua import ua
from asyncua.crypto.security_policies import (
    SecurityPolicy,
    SecurityPolicyBasic256Sha256,
    SecurityPolicyNone,
)

from protocols.driver import DeviceMisconfigured
from protocols.opcua.certificates import first_certificate, thumbprint
from protocols.opcua.profile import OpcUaConnection

log = logging.getLogger(__name__)

MODES: dict[str, ua.MessageSecurityMode] = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
POLICIES: dict[str, type[SecurityPolicy]] = {
    "None": SecurityPolicyNone,
    "Basic256Sha256": SecurityPolicyBasic256Sha256,
}
TOKEN_NAMES: dict[ua.UserTokenType, str] = {
    ua.UserTokenType.Anonymous: "anonymous",
    ua.UserTokenType.UserName: "username/password",
    ua.UserTokenType.Certificate: "user certificate",
    ua.UserTokenType.IssuedToken: "issued token",
}


def offered(endpoints: list[ua.EndpointDescription]) -> str:
    """'None, Basic256Sha256/Sign': the security a server offers, as a profile writes it."""
    names: list[str] = []
    for ep in endpoints:
        mode = ep.SecurityMode.name.rstrip("_")
        policy = ep.SecurityPolicyUri.rsplit("#", 1)[-1]
        name = "None" if mode == "None" else f"{policy}/{mode}"
        if name not in names:
            names.append(name)
    return ", ".join(names) or "nothing"


def choose_endpoint(
    device: str, connection: OpcUaConnection, endpoints: list[ua.EndpointDescription]
) -> ua.EndpointDescription:
    """The endpoint with the profile's security mode and policy, accepting its login."""
    security = connection.security
    mode = MODES[security.mode]
    policy_uri = POLICIES["None" if security.mode == "None" else security.policy].URI
    for ep in endpoints:
        if ep.SecurityMode == mode and ep.SecurityPolicyUri == policy_uri:
            _check_login(device, connection, ep)
            return ep
    wanted = "None" if security.mode == "None" else f"{security.policy}/{security.mode}"
    fix = (
        "give this edge a certificate and set connection.security.mode to one of them "
        "(see the OPC UA README, security)"
        if security.mode == "None"
        else "set connection.security.mode to one of them"
    )
    raise DeviceMisconfigured(
        f"{device}: the server at {connection.endpoint} does not offer security {wanted}; "
        f"it offers {offered(endpoints)}: {fix}"
    )


def _check_login(device: str, connection: OpcUaConnection, ep: ua.EndpointDescription) -> None:
    accepted = {token.TokenType for token in ep.UserIdentityTokens or []}
    if not accepted:
        return  # a server that does not say; the session will tell
    names = ", ".join(TOKEN_NAMES.get(t, str(t)) for t in accepted)
    if connection.username:
        if ua.UserTokenType.UserName not in accepted:
            raise DeviceMisconfigured(
                f"{device}: the server at {connection.endpoint} accepts no username/password "
                f"on this endpoint (it accepts {names}): remove connection.username"
            )
    elif ua.UserTokenType.Anonymous not in accepted:
        raise DeviceMisconfigured(
            f"{device}: the server at {connection.endpoint} requires a login (it accepts "
            f"{names}): set connection.username and connection.password"
        )


def trusted_server_certificate(
    device: str,
    connection: OpcUaConnection,
    endpoint: ua.EndpointDescription,
    pinned: bytes | None,
    first_seen: bytes | None,
) -> bytes:
    """The server's certificate (DER) if it is the pinned one, or, without a pin, the one
    this edge saw first (trust on first use); anything else is refused."""
    if not endpoint.ServerCertificate:
        raise DeviceMisconfigured(
            f"{device}: the server at {connection.endpoint} offers a secure endpoint but no "
            "certificate: check the server's certificate configuration"
        )
    presented = first_certificate(endpoint.ServerCertificate)
    if pinned is not None:
        if presented != pinned:
            raise DeviceMisconfigured(
                f"{device}: the server at {connection.endpoint} presents certificate "
                f"{thumbprint(presented)}, but connection.security.server_certificate is "
                f"{thumbprint(pinned)}: if the server's certificate was renewed, "
                "replace that file with the new one"
            )
    elif first_seen is None:
        log.info(
            "%s: trusting the server certificate %s of %s on first use; pin it with "
            "connection.security.server_certificate",
            device,
            thumbprint(presented),
            connection.endpoint,
        )
    elif presented != first_seen:
        raise DeviceMisconfigured(
            f"{device}: the server at {connection.endpoint} now presents certificate "
            f"{thumbprint(presented)}, not {thumbprint(first_seen)} as when this edge first "
            "connected: if it was renewed on purpose, put the new certificate in "
            "connection.security.server_certificate (or restart the edge)"
        )
    return presented
