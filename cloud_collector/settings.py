"""Collector settings: TRACE_* environment variables (see the README's table)."""

from __future__ import annotations

import os
import socket

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from protocols.mqtt.connection import ENV_FILE, BrokerSettings
from protocols.time_zones import zone_named


def plant_zone_named(value: str) -> str:
    """`value`, the plant's time zone (TRACE_PLANT_TIMEZONE: the pages and tracectl show
    times in it), if it is an IANA name; else ValueError saying how to name one."""
    if zone_named(value) is None:
        raise ValueError(
            f"TRACE_PLANT_TIMEZONE {value!r} is not a time zone: give an IANA name such "
            "as Europe/Berlin, Asia/Shanghai or UTC"
        )
    return value


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACE_", env_file=ENV_FILE, extra="ignore")

    database_url: str = "postgresql://trace@127.0.0.1:55432/traceability"
    # Where the API's reads go (GET routes: traces, recalls, batches, reports, EPCIS
    # queries): a streaming-replication standby, to take that load off the primary. Unset:
    # the primary. Writes, API key checks and the capture job status stay on the primary.
    read_database_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Unique per collector process: its MQTT client id on the shared subscription and the
    # level of its status topic (trace/v1/collectors/<id>/status). Unset: its broker
    # identity's name (the broker uses it as the client id anyway; give every process an
    # identity of its own), else collector-HOSTNAME-PID. Nothing is kept under it between
    # runs (clean sessions), so a new id at every start costs nothing.
    collector_id: str = Field(
        default_factory=lambda: f"collector-{socket.gethostname()}-{os.getpid()}",
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
    )
    # A reading committed this long after it was taken is marked as backfill.
    backfill_after_s: float = Field(default=60.0, gt=0)
    # Collectors in one group split the edges' messages between them.
    share_group: str = "collectors"
    mqtt: BrokerSettings = Field(default_factory=BrokerSettings)

    # ---- Ingest. ----
    # A record dated further than this past the collector's clock is refused.
    max_skew_s: float = Field(default=300.0, ge=0)
    # A larger MQTT message is dead-lettered unread (its first 64 KiB are kept).
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Dead letters not seen again for this long are deleted by the collector.
    dead_letter_retention_days: float = Field(default=30.0, gt=0)
    # Group commit: messages of readings committed in one transaction: what arrived while
    # the group before committed, at most this many messages or records (one message may
    # exceed the records alone); a committer with nothing to do waits the linger after the
    # first message for more.
    # A larger group updates each rollup row once for more readings (the upserts are most
    # of the database's work past the COPY): 50,000 made 100-reading messages ~15 % faster
    # than 20,000 (bench/README.md).
    ingest_group_messages: int = Field(default=500, ge=1, le=10_000)
    ingest_group_records: int = Field(default=50_000, ge=1, le=1_000_000)
    ingest_group_linger_s: float = Field(default=0.005, ge=0, le=1)
    # Database connections the consumer commits on, side by side, each for its own edges
    # (an edge's messages always go to the same one, in the order they arrived): while one
    # waits for the database, another's group is read and sent. Lanes of one number in all
    # the collectors of a database take turns (consumer.py), so this is also how many
    # group commits run in the database at once: the same for every collector of a
    # database, near its cores.
    ingest_connections: int = Field(default=2, ge=1, le=16)
    # MQTT v5 Receive Maximum: messages the broker may have delivered to this collector and
    # not yet had acknowledged (the collector acknowledges after the commit). The bound of
    # what the collector holds when the database is slower than the inflow; the rest waits
    # at the broker and, behind it, in the edges' outboxes. Unset: twice the group bound.
    receive_maximum: int | None = Field(default=None, ge=1, le=65_535)
    # Bytes of payload the collector holds taken and unsettled, at most: the bound of its
    # memory whatever the messages' size (the Receive Maximum counts messages). It reads
    # on past it once it holds less; a single larger message is still taken.
    held_bytes: int = Field(default=32 * 1024 * 1024, ge=64 * 1024)
    # Readings' chunks wholly older than this many days are dropped (cloud_collector/
    # retention.py); the rollups, batches and genealogy stay. Unset: readings are kept.
    readings_retention_days: float | None = Field(default=None, ge=1, le=36_500)
    # How often a collector looks for chunks to drop (one collector of a group does it).
    readings_retention_every_s: float = Field(default=3600.0, ge=10, le=86_400)

    # ---- HTTP API limits (README "HTTP limits"). ----
    # Connections of the API's pool (trace queries, exports); keys and /healthz use two more
    # of their own, so that neither waits behind a busy pool.
    api_pool_size: int = Field(default=10, ge=1, le=1000)
    # Every statement of a request; an export streamed to the client (recall CSV, FSMA 204)
    # is one long statement and gets the longer budget.
    api_statement_timeout_s: float = Field(default=30.0, gt=0, le=86_400)
    api_export_statement_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    # How long a key's lookup (found or not) is reused: a key revoked by tracectl or by another
    # collector stops working within this time (one revoked over this process's API: at once).
    api_key_cache_s: float = Field(default=5.0, ge=0, le=300)
    # Request bodies: EPCIS capture, ERP and QC imports, everything else.
    api_capture_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    api_import_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    api_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A request's line and headers must arrive within this time (408 otherwise).
    api_header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # A request's whole body must arrive within this time (408 otherwise).
    api_body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # An idle keep-alive connection is closed after this time.
    api_keep_alive_s: float = Field(default=5.0, gt=0, le=300)
    # Connections and requests the server takes at once; beyond them it answers 503.
    api_max_connections: int = Field(default=500, ge=10)
    # Recall by condition looks at most this many days of readings in one request.
    condition_max_days: int = Field(default=31, ge=1, le=3660)
    # Open recall cases are recomputed this often between reads (0: only when read).
    recall_cases_refresh_s: float = Field(default=300.0, ge=0, le=86_400)

    @property
    def reads_url(self) -> str:
        """The database the API's reads use: TRACE_READ_DATABASE_URL, else the primary."""
        return self.read_database_url or self.database_url

    # ---- Pages (cloud_collector/pages/). ----
    # The plant's IANA time zone: every date and time on the pages is shown in it.
    plant_timezone: str = "UTC"
    # A page session ends this long after sign-in (a shift and a half by default).
    page_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)

    # ---- Alerts (cloud_collector/alerts/). ----
    # How often the time-based rules (device offline, outbox alarm, gap found) are looked at.
    alerts_evaluate_every_s: float = Field(default=15.0, ge=0.1, le=3600)
    # One delivery attempt (a webhook's request, an e-mail's SMTP session) ends after this.
    alerts_delivery_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # The wait after the n-th failed attempt: base * 2^(n-1), at most the cap (with jitter).
    alerts_backoff_s: float = Field(default=5.0, gt=0, le=3600)
    alerts_backoff_max_s: float = Field(default=3600.0, gt=0, le=86_400)
    # Attempts in flight at once in this process, and at most this many per target: a
    # failing or slow endpoint holds only its own share.
    alerts_in_flight: int = Field(default=32, ge=1, le=1000)
    alerts_in_flight_per_target: int = Field(default=4, ge=1, le=100)
    # E-mail: the SMTP server alerts are sent through. Unset: e-mail targets wait (a
    # collector with a server configured delivers them).
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    # STARTTLS before logging in (off only for a relay on the same host or in tests).
    smtp_starttls: bool = True
    smtp_from: str = "trace-alerts@localhost"

    @field_validator("plant_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return plant_zone_named(value)

    @model_validator(mode="after")
    def _client_id_is_the_identity(self) -> CollectorSettings:
        if "collector_id" not in self.model_fields_set and self.mqtt.username:
            self.collector_id = self.mqtt.username
        return self

    @property
    def status_id(self) -> str:
        """The level of this collector's status topic: its broker identity's name when it
        has one (the ACL lets an identity publish under its own name only), else its id."""
        return self.mqtt.username or self.collector_id

    @property
    def messages_in_hand(self) -> int:
        """The Receive Maximum the collector asks the broker for."""
        return min(self.receive_maximum or 2 * self.ingest_group_messages, 65_535)
