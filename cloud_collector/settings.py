"""Collector settings: TRACE_* environment variables (see the README's table)."""

from __future__ import annotations

import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocols.mqtt.connection import ENV_FILE, BrokerSettings


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACE_", env_file=ENV_FILE, extra="ignore")

    database_url: str = "postgresql://trace@127.0.0.1:55432/traceability"
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Unique per collector process: its MQTT client id on the shared subscription.
    collector_id: str = Field(default_factory=lambda: f"collector-{socket.gethostname()}")
    # A reading committed this long after it was taken is marked as backfill.
    backfill_after_s: float = Field(default=60.0, gt=0)
    # Collectors in one group split the edges' messages between them.
    share_group: str = "collectors"
    mqtt: BrokerSettings = Field(default_factory=BrokerSettings)
    # A record dated further than this past the collector's clock is refused.
    max_skew_s: float = Field(default=300.0, ge=0)
    # A larger MQTT message is dead-lettered unread (its first 64 KiB are kept).
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Dead letters not seen again for this long are deleted by the collector.
    dead_letter_retention_days: float = Field(default=30.0, gt=0)
