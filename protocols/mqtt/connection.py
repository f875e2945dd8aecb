"""Broker connection settings shared by edge agents and collectors (TRACE_MQTT_*)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Settings come from TRACE_* environment variables, then from the file TRACE_ENV_FILE
# names (default .env in the working directory), then from defaults.
ENV_FILE = os.environ.get("TRACE_ENV_FILE", ".env")


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACE_MQTT_", env_file=ENV_FILE, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(default=30, ge=5)

    def client_args(self) -> dict[str, object]:
        """Keyword arguments for aiomqtt.Client."""
        return {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "keepalive": self.keepalive_s,
        }
