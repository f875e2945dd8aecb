"""Broker connection settings shared by edge agents and collectors (TRACE_MQTT_*)."""

from __future__ import annotations

import os
from pathlib import Path

import aiomqtt
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Settings come from TRACE_* environment variables, then from the file TRACE_ENV_FILE
# names (default .env in the working directory), then from defaults.
ENV_FILE = os.environ.get("TRACE_ENV_FILE", ".env")


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACE_MQTT_", env_file=ENV_FILE, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # This process's broker identity (`tracectl edge add` / `tracectl broker add`).
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(default=30, ge=5)
    # TLS is on when any of these is set: the CA that signed the broker's certificate
    # (unset: the system's trust store), and this client's own certificate and key when
    # the broker requires one (require_certificate).
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _tls_files(self) -> BrokerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "TRACE_MQTT_TLS_CERT_FILE and TRACE_MQTT_TLS_KEY_FILE go together: set both "
                "(the client's certificate and its private key) or neither"
            )
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"TRACE_MQTT_{name.upper()} {path} is not a readable file")
        return self

    @property
    def tls(self) -> bool:
        return any(f is not None for f in (self.tls_ca_file, self.tls_cert_file, self.tls_key_file))

    def client_args(self) -> dict[str, object]:
        """Keyword arguments for aiomqtt.Client."""
        args: dict[str, object] = {
            "hostname": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "keepalive": self.keepalive_s,
        }
        if self.tls:
            # Certificate and host name are verified (paho's defaults); never tls_insecure.
            args["tls_params"] = aiomqtt.TLSParameters(
                ca_certs=_str(self.tls_ca_file),
                certfile=_str(self.tls_cert_file),
                keyfile=_str(self.tls_key_file),
            )
        return args


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
