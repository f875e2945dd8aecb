"""The collector's settings: its MQTT client id follows its broker identity."""

from __future__ import annotations

from cloud_collector.settings import CollectorSettings
from protocols.mqtt.connection import BrokerSettings


def test_the_client_id_is_the_broker_identity_unless_set() -> None:
    identity = BrokerSettings(username="collector-a", password="x")
    assert CollectorSettings(mqtt=identity).collector_id == "collector-a"
    assert CollectorSettings(mqtt=identity, collector_id="c-1").collector_id == "c-1"
    assert CollectorSettings(mqtt=BrokerSettings()).collector_id.startswith("collector-")
