"""An OPC UA server simulating an oven / reactor PLC, for tests and the demo (not used by
the edge runtime).

It is a real asyncua server: the edge reads it over opc.tcp exactly as it would read a PLC
on the line, including security, status codes and source timestamps. Values live in the
simulator, not in the server, so `stop()` then `start()` on the same port is a PLC reboot
that keeps its values.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from protocols.opcua.certificates import load_certificate

NAMESPACE_URI = "urn:lot-trace:simulator:reactor"
APPLICATION_URI = "urn:lot-trace:simulator"
ENDPOINT_PATH = "/lot-trace/reactor"
# The port device_profiles/opcua-reactor-plc.yaml expects (4840 is the standard one).
DEFAULT_PORT = 14840

SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]


@dataclass(frozen=True)
class Variable:
    data_type: ua.VariantType
    initial: Any
    unit: str | None = None


# The reactor's address space: one table, so the profile and the demo are written against
# something a reader sees at a glance.
REACTOR: dict[str, Variable] = {
    "Reactor1.Temperature": Variable(ua.VariantType.Double, 20.0, "degC"),
    "Reactor1.Pressure": Variable(ua.VariantType.Double, 1.0, "bar"),
    "Reactor1.AgitatorSpeed": Variable(ua.VariantType.Double, 0.0, "1/min"),
    "Reactor1.AgitatorRunning": Variable(ua.VariantType.Boolean, False),
    "Reactor1.Phase": Variable(ua.VariantType.Int32, 0),  # 0 idle .. 4 discharging
    "Reactor1.BatchId": Variable(ua.VariantType.String, ""),
}

SECURITY_POLICIES: dict[SecurityMode, ua.SecurityPolicyType] = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}

_NOW = object()  # set(): stamp the value with the current time


def _status(status: int | str) -> ua.StatusCode:
    code = getattr(ua.StatusCodes, status) if isinstance(status, str) else status
    return ua.StatusCode(ua.UInt32(code))


class _Users(UserManager):
    """Username/password check, for servers that refuse anonymous sessions."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class ReactorSimulator:
    """The reactor PLC on opc.tcp://host:port/lot-trace/reactor, namespace index 2.

    security_modes: the endpoints offered ("None", "Sign", "SignAndEncrypt"); the secure
    ones need `certificate` and `private_key`. users: if given, only these username/password
    pairs may log in. trusted_client_certificates: if given, only these client certificates
    may open a session (others get BadCertificateUntrusted). max_nodes_per_read: if above 0,
    a Read asking for more nodes fails with BadTooManyOperations, as small PLCs do.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        *,
        variables: dict[str, Variable] | None = None,
        security_modes: tuple[SecurityMode, ...] = ("None",),
        certificate: Path | None = None,
        private_key: Path | None = None,
        users: dict[str, str] | None = None,
        trusted_client_certificates: list[Path] | None = None,
        max_nodes_per_read: int = 0,
    ) -> None:
        if any(m != "None" for m in security_modes) and (
            certificate is None or private_key is None
        ):
            raise ValueError("secure endpoints need the server's certificate and private_key")
        self.host = host
        self.port = port
        self.variables = dict(variables if variables is not None else REACTOR)
        self.security_modes = security_modes
        self.certificate = certificate
        self.private_key = private_key
        self.users = users
        self.trusted_client_certificates = trusted_client_certificates
        self.max_nodes_per_read = max_nodes_per_read
        self.namespace_index = 2
        powered_on = cast(ua.DateTime, datetime.now(UTC))
        self.values: dict[str, ua.DataValue] = {
            name: ua.DataValue(ua.Variant(v.initial, v.data_type), SourceTimestamp=powered_on)
            for name, v in self.variables.items()
        }
        self._server: Server | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}"

    def node_id(self, name: str) -> str:
        return f"ns={self.namespace_index};s={name}"

    def _node(self, name: str) -> ua.NodeId:
        return ua.NodeId.from_string(self.node_id(name))

    @property
    def running(self) -> bool:
        return self._server is not None

    async def set(
        self,
        name: str,
        value: Any = None,
        *,
        status: int | str = "Good",
        source_time: datetime | object | None = _NOW,
        server_time: datetime | None = None,
    ) -> None:
        """Give variable `name` a value (None keeps the current one, as a PLC keeps its last
        value when a sensor fails), a status code (number or name, e.g. "BadSensorFailure")
        and a source timestamp (default now; None for a device without a clock)."""
        variable = self.variables[name]
        if value is None:
            current = self.values[name].Value
            value = current.Value if current is not None else None
        stamp = datetime.now(UTC) if source_time is _NOW else source_time
        assert stamp is None or isinstance(stamp, datetime)
        data = ua.DataValue(
            ua.Variant(value, variable.data_type),
            _status(status),
            SourceTimestamp=cast(ua.DateTime | None, stamp),
            ServerTimestamp=cast(ua.DateTime | None, server_time),
        )
        self.values[name] = data
        if self._server is not None:
            await self._server.write_attribute_value(self._node(name), data)

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_server_name("lot-trace reactor PLC simulator")
        await server.set_application_uri(APPLICATION_URI)
        server.set_endpoint(self.endpoint)
        server.set_security_policy([SECURITY_POLICIES[m] for m in self.security_modes])
        if self.certificate is not None and self.private_key is not None:
            await server.load_certificate(str(self.certificate))
            await server.load_private_key(str(self.private_key))
        if self.users is not None:
            server.iserver.user_manager = _Users(self.users)
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if self.trusted_client_certificates is not None:
            server.set_certificate_validator(self._trust_only(self.trusted_client_certificates))
        if self.max_nodes_per_read:
            await self._limit_reads(server)
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        plc = await server.nodes.objects.add_object(self._node("Reactor1"), "Reactor1")
        for name, variable in self.variables.items():
            node = await plc.add_variable(
                self._node(name),
                name.rsplit(".", 1)[-1],
                ua.Variant(variable.initial, variable.data_type),
            )
            if variable.unit:
                # Browsing clients (UaExpert) show the unit; the profile repeats it per tag.
                await node.write_attribute(
                    ua.AttributeIds.Description,
                    ua.DataValue(ua.Variant(ua.LocalizedText(f"unit: {variable.unit}"))),
                )
            await server.write_attribute_value(node.nodeid, self.values[name])
        await server.start()
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def __aenter__(self) -> ReactorSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @staticmethod
    def _trust_only(paths: list[Path]) -> Any:
        trusted = {
            load_certificate(p, "trusted client certificate", "-").public_bytes(Encoding.DER)
            for p in paths
        }

        async def validate(certificate: x509.Certificate, _: ua.ApplicationDescription) -> None:
            if certificate.public_bytes(Encoding.DER) not in trusted:
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

        return validate

    async def _limit_reads(self, server: Server) -> None:
        limit = self.max_nodes_per_read
        await server.write_attribute_value(
            ua.FourByteNodeId(
                ua.Int32(ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
            ),
            ua.DataValue(ua.Variant(limit, ua.VariantType.UInt32)),
        )

        def refuse_large_reads(event: ServerItemCallback, _: object) -> None:
            if event.is_external and len(event.request_params.NodesToRead) > limit:
                raise ServiceError(ua.StatusCodes.BadTooManyOperations)

        server.subscribe_server_callback(CallbackType.PreRead, refuse_large_reads)


# One charge of the reactor: phase (as Reactor1.Phase shows it), duration in seconds, and
# the temperature the jacket drives towards.
CYCLE: list[tuple[int, float, float]] = [
    (1, 10.0, 25.0),  # charging
    (2, 20.0, 75.0),  # heating
    (3, 20.0, 75.0),  # holding
    (4, 10.0, 40.0),  # discharging
    (0, 5.0, 20.0),  # idle between batches
]


async def run_reactor_process(sim: ReactorSimulator, period_s: float = 0.5) -> None:
    """Drive the reactor like a production line: charge, heat to 75 degC, hold, discharge,
    a new batch id per charge and an empty one while idle. Runs until cancelled."""
    batch_no = 0
    temperature = 20.0
    while True:
        for phase, duration, target in CYCLE:
            if phase == 1:
                batch_no += 1
                await sim.set("Reactor1.BatchId", f"R1-{datetime.now(UTC):%Y%m%d}-{batch_no:03d}")
            elif phase == 0:
                await sim.set("Reactor1.BatchId", "")
            await sim.set("Reactor1.Phase", phase)
            await sim.set("Reactor1.AgitatorRunning", phase in (1, 2, 3))
            t0 = time.monotonic()
            while (t := time.monotonic() - t0) < duration:
                temperature += (target - temperature) * min(1.0, period_s / 6.0)
                wobble = 0.3 * math.sin(t * 1.7)
                await sim.set("Reactor1.Temperature", round(temperature + wobble, 3))
                await sim.set("Reactor1.Pressure", round(1.0 + (temperature - 20.0) / 40.0, 4))
                speed = 120.0 + 10.0 * math.sin(t / 3.0) if phase in (1, 2, 3) else 0.0
                await sim.set("Reactor1.AgitatorSpeed", round(speed, 2))
                await asyncio.sleep(period_s)
