"""Edge agent settings: TRACE_EDGE_* environment variables (see the README's table)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocols.mqtt.connection import ENV_FILE, BrokerSettings


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACE_EDGE_", env_file=ENV_FILE, extra="ignore")

    site: Path = Path("deploy/demo/site.yaml")  # which lines and device profiles this PC runs
    state_dir: Path = Path(".services/edge")  # active batches (and the outbox) live here
    control_host: str = "127.0.0.1"
    control_port: int = Field(default=8100, ge=1, le=65535)
    # The token that changes need (POST/PUT/DELETE, and reads from off this PC): a file only
    # the service's user may read, made at start if missing. Default: STATE_DIR/control.token.
    control_token_file: Path | None = None
    # Other names clients reach the control API by (the PC's host name or plant address,
    # when TRACE_EDGE_CONTROL_HOST exposes it); any other Host header is refused.
    control_host_names: list[str] = Field(default_factory=list)
    # A message carries at most this many records, and waits at most this long for more.
    publish_max_records: int = Field(default=500, ge=1, le=100_000)
    publish_linger_s: float = Field(default=0.2, ge=0, le=10)
    # Unacknowledged messages are sent again after this long.
    ack_timeout_s: float = Field(default=10.0, gt=0)
    # The outbox holds this many hours of outage at the site's configured capture rate;
    # the agent turns it into bytes from the profiles (see README: outbox sizing).
    outbox_hours: float = Field(default=72.0, gt=0, le=24 * 365)
    # An explicit bound in bytes instead (a line PC with a small disk; the chaos tests fill
    # it in seconds): it replaces the bound computed from the hours, floor included.
    outbox_max_bytes: int | None = Field(default=None, ge=4096)
    # Appends within this interval share one disk commit (one fsync); a power cut loses
    # at most this much capture. 0 commits every poll on its own.
    outbox_commit_interval_s: float = Field(default=0.05, ge=0, le=5)
    outbox_policy: Literal["thin_oldest", "drop_oldest", "drop_newest"] = "thin_oldest"
    # How often the retained status message is refreshed.
    status_interval_s: float = Field(default=10.0, gt=0)
    mqtt: BrokerSettings = Field(default_factory=BrokerSettings)

    @property
    def token_file(self) -> Path:
        return self.control_token_file or self.state_dir / "control.token"
