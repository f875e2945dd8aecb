"""The OPC UA profile model: endpoint, security, nodes, and subscription or polling."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from protocols.profile import Name, ProfileBase, SpecLimits, Strict


class OpcUaSecurity(Strict):
    """None, or Basic256Sha256 with Sign or SignAndEncrypt and this client's certificate."""

    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    certificate: Path | None = Field(default=None, description="client certificate (DER or PEM)")
    private_key: Path | None = Field(default=None, description="client private key (PEM)")
    server_certificate: Path | None = Field(
        default=None, description="the server certificate to trust; none: trust on first use"
    )

    @model_validator(mode="after")
    def _keys_for_signing(self) -> OpcUaSecurity:
        if self.mode != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(
                f"security mode {self.mode} needs certificate and private_key: "
                "point them at this edge's client certificate and key files"
            )
        return self


class OpcUaConnection(Strict):
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="opc.tcp://host:port/path")
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    username: str | None = None
    password: str | None = None
    timeout_s: float = Field(default=4.0, gt=0, le=120)


class Deadband(Strict):
    """Report a change only when it exceeds this: absolute in the tag's engineering unit
    (after scale and offset), or percent of the node's EURange."""

    type: Literal["absolute", "percent"] = "absolute"
    value: float = Field(ge=0)


class OpcUaTag(Strict):
    name: Name
    node_id: str = Field(min_length=3, description="e.g. ns=2;s=Reactor1.Temperature")
    sampling_interval_s: float | None = Field(
        default=None, ge=0, le=3600, description="server-side sampling; default: the profile's"
    )
    deadband: Deadband | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = Field(default=None, max_length=32)
    spec: SpecLimits | None = None


class OpcUaProfile(ProfileBase):
    protocol: Literal["opcua"]
    connection: OpcUaConnection
    # subscription: the server reports changes (data-change notifications); poll: read all
    # tags every poll_interval_s, for servers whose subscriptions are unreliable.
    sampling: Literal["subscription", "poll"] = "subscription"
    publishing_interval_s: float = Field(default=1.0, ge=0.01, le=3600)
    sampling_interval_s: float = Field(default=0.5, ge=0, le=3600)
    poll_interval_s: float = Field(default=1.0, ge=0.05, le=3600)
    tags: list[OpcUaTag] = Field(min_length=1)

    def readings_per_s(self) -> float:
        """Subscribed: each tag at its sampling interval, no faster than the publishing
        interval (nor 100 a second); polled: every tag at each poll."""
        if self.sampling == "poll":
            return len(self.tags) / self.poll_interval_s
        fastest = max(self.publishing_interval_s, 0.01)
        intervals = [
            max(t.sampling_interval_s or self.sampling_interval_s, fastest) for t in self.tags
        ]
        return sum(1.0 / interval for interval in intervals)

    def files_beside(self, folder: Path) -> OpcUaProfile:
        """Relative certificate paths are relative to the profile's own folder, not to
        wherever the edge happens to be started from."""
        security = self.connection.security
        resolved = {
            key: folder / value
            for key in ("certificate", "private_key", "server_certificate")
            if (value := getattr(security, key)) is not None and not value.is_absolute()
        }
        if not resolved:
            return self
        connection = self.connection.model_copy(
            update={"security": security.model_copy(update=resolved)}
        )
        return self.model_copy(update={"connection": connection})
