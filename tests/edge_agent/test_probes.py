"""Probes through the edge, asked at the collector: the request travels over the real broker
on a topic only collectors may publish to, the edge runs the same probe as the line-PC
command while its capture goes on, and the result comes back through the API with the raw
registers beside the decoded value and the spec limits, so a word-order mistake is plain.
Hostile requests get an answer with the reason, or are counted, never end the edge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from cloud_collector.auth import Role
from device_profiles import LIBRARY
from device_profiles.schema import load_profile, parse_profile
from edge_agent.probes import EdgeProbes
from protocols.installed import REGISTRY
from protocols.modbus.simulator import ModbusSimulator
from protocols.mqtt import topics
from protocols.mqtt.contract import ProbeRequest, ProbeResult
from tests.conftest import RunningCollector, Services, free_port, until
from tests.edge_agent.test_reconfigure import (
    PROFILE,
    agent_for,
    bounded,
    pusher_identity,
    pushes,
    reading_times,
    running,
    write_site,
)
from tests.tracectl.test_collector_commands import Run
from tests.tracectl.test_probe import row

__all__ = ["pusher_identity", "pushes"]  # fixtures shared with the reconfigure tests


def word_order_mistake(port: int) -> dict[str, Any]:
    """The controller's profile with the temperature's word order wrong (it sends big)."""
    profile: dict[str, Any] = yaml.safe_load(PROFILE.read_text())
    profile["name"] = "tpc-new"
    profile["connection"]["port"] = port
    profile["tags"][0]["word_order"] = "little"
    return profile


@bounded(90)
async def test_a_probe_through_the_edge_shows_a_word_order_mistake(
    tmp_path: Path,
    services: Services,
    collector: RunningCollector,
    pushes: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRACE_API_URL", collector.api_url)
    monkeypatch.setenv("TRACE_API_KEY", collector.keys[Role.provisioner])
    tracectl = Run(capsys)
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(word_order_mistake(free_port())))
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    port = free_port()
    site = write_site(tmp_path, edge, port, ["tpc-a"])
    agent = agent_for(site, tmp_path / "state", await services.register(edge))
    url = services.database_url
    async with (
        ModbusSimulator(load_profile(PROFILE), port=port) as sim,
        running(agent),
        collector.client(Role.provisioner) as api,
    ):
        sim.set("temperature", 72.5)
        await until(lambda: reading_times(url, edge, "tpc-a", "temperature"), 20, "capture")
        await until(lambda: asyncio.sleep(0, agent.publisher.health.connected), 10, "online")
        capture_run = agent._runs["tpc-a"]
        asked = await api.post(
            f"/api/v1/provisioning/edges/{edge}/probe",
            json={"profile": word_order_mistake(port)},
            timeout=60,
        )
        by_name = await api.post(
            f"/api/v1/provisioning/edges/{edge}/probe", json={"device": "tpc-a"}, timeout=60
        )
        unknown = await api.post(
            f"/api/v1/provisioning/edges/{edge}/probe", json={"device": "tpc-zz"}, timeout=60
        )
        audit = (await api.get("/api/v1/provisioning/audit?subject=profile&name=tpc-new")).json()
        # The same from a technician's terminal: the table the line-PC command prints.
        code, out, _ = await tracectl("profile", "probe", "--edge", edge, "--device", "tpc-a")
        gone, _, gone_err = await tracectl(
            "profile", "probe", "--edge", edge, str(tmp_path / "new.yaml"), "--seconds", "1"
        )
        # Capture ran on in the same task meanwhile.
        still_running = agent._runs["tpc-a"] is capture_run and not capture_run.done()
    assert asked.status_code == 200, asked.text
    result = ProbeResult.model_validate(asked.json())
    assert (result.edge_id, result.device, result.error) == (edge, "tpc-new", None)
    temperature = next(t for t in result.tags if t.tag == "temperature")
    # The registers as the device sent them, the absurd value out of spec, and beside it
    # the right word order's value within spec.
    assert (temperature.where, temperature.raw) == ("holding 0..1", "0x4291 0x0000")
    assert temperature.value is not None and abs(temperature.value) < 1e-30
    assert (temperature.spec_low, temperature.spec_high, temperature.unit) == (60, 90, "Cel")
    assert temperature.within_spec is False
    right = [a for a in temperature.alternatives if a.within_spec]
    assert [(a.label, a.value) for a in right] == [("byte_order big, word_order big", 72.5)]
    # A device of the running site, by name: its own profile, read right.
    named = ProbeResult.model_validate(by_name.json())
    assert named.error is None and named.device == "tpc-a"
    assert next(t for t in named.tags if t.tag == "temperature").value == 72.5
    assert unknown.status_code == 200 and "tpc-zz is not in the site" in unknown.json()["error"]
    assert "its devices: tpc-a" in unknown.json()["error"]
    assert still_running
    assert code == 0 and row(out, "temperature")[5:9] == ["72.5", "Cel", "good", "60..90"]
    assert gone == 1 and gone_err.startswith(f"tracectl: edge {edge} probed tpc-new: the device ")
    assert audit[0]["action"] == "probed" and audit[0]["actor"].endswith("-provisioner")
    assert f"through edge {edge} with profile sha256 " in audit[0]["detail"]
    assert audit[0]["detail"].endswith("4 tag(s) read, 0 bad")


@bounded(60)
async def test_an_edge_that_does_not_answer_is_a_timeout_that_says_so(
    services: Services,
    collector: RunningCollector,
    pushes: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRACE_PROVISIONING_PROBE_WAIT_S", "0.5")
    edge = f"edge-{uuid.uuid4().hex[:8]}"
    await services.register(edge)  # registered, never connected
    async with collector.client(Role.provisioner) as api:
        silent = await api.post(
            f"/api/v1/provisioning/edges/{edge}/probe",
            json={"device": "tpc-a", "seconds": 0.5},
            timeout=30,
        )
        nobody = await api.post(
            "/api/v1/provisioning/edges/no-such-edge/probe", json={"device": "x"}, timeout=30
        )
        invalid = await api.post(
            f"/api/v1/provisioning/edges/{edge}/probe",
            json={"profile": {"name": "x", "protocol": "modbus_tcp"}},
            timeout=30,
        )
    async with collector.client(Role.reader) as api:
        looker = await api.post(
            f"/api/v1/provisioning/edges/{edge}/probe", json={"device": "x"}, timeout=30
        )
    assert silent.status_code == 504, silent.text
    assert f"edge {edge} did not answer the probe within 1 s" in silent.json()["detail"]
    assert nobody.status_code == 404 and "tracectl edge add no-such-edge" in nobody.text
    assert invalid.status_code == 422 and invalid.json()["detail"]["problems"]
    assert looker.status_code == 403


@bounded(60)
async def test_only_collectors_may_ask_an_edge_for_a_probe(services: Services) -> None:
    """The broker drops a probe request an edge publishes for another (or itself: its rules
    let it only read its request topic, tests/cloud_collector/test_broker_identities.py)."""
    victim, mallory = f"edge-{uuid.uuid4().hex[:8]}", f"edge-{uuid.uuid4().hex[:8]}"
    victim_broker = await services.register(victim)
    mallory_broker = await services.register(mallory)
    request = ProbeRequest(
        edge_id=victim,
        request_id=uuid.uuid4().hex,
        requested_by="mallory",
        sent_at=datetime.now(UTC),
        device="tpc-a",
    ).model_dump_json()
    seen: list[str] = []
    async with aiomqtt.Client(
        **victim_broker.client_args(),  # type: ignore[arg-type]
        identifier=victim,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as listener:
        await listener.subscribe(topics.probe_request(victim), qos=1)
        # A denied QoS 1 publish may end the sender's connection (Mosquitto 2.0.11).
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client(
                **mallory_broker.client_args(),  # type: ignore[arg-type]
                protocol=aiomqtt.ProtocolVersion.V5,
            ) as client:
                await client.publish(topics.probe_request(victim), request, qos=1)
        # The collectors' own request does arrive: the listener would have seen the others.
        async with aiomqtt.Client(
            **services.broker.client_args(),  # type: ignore[arg-type]
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as collector:
            await collector.publish(topics.probe_request(victim), b"from a collector", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                async for message in listener.messages:
                    seen.append(bytes(message.payload).decode())  # type: ignore[arg-type]
                    if seen[-1] == "from a collector":
                        break
    assert seen == ["from a collector"]


def probes_of(running: dict[str, Any]) -> tuple[EdgeProbes, list[ProbeResult]]:
    sent: list[ProbeResult] = []

    def reply(topic: str, payload: str) -> bool:
        assert topic == topics.probe_result("edge-1")
        sent.append(ProbeResult.model_validate_json(payload))
        return True

    return EdgeProbes("edge-1", lambda: running, reply, REGISTRY), sent


HOSTILE: list[tuple[str, bytes, str | None]] = [
    ("not JSON", b"\xff\x00garbage", None),
    ("no request id", b'{"edge_id": "edge-1"}', None),
    (
        "a request the contract refuses, answered",
        json.dumps({"edge_id": "edge-1", "request_id": "a" * 32, "device": "x"}).encode(),
        "the request is refused: requested_by: Field required",
    ),
    (
        "another edge's",
        ProbeRequest(
            edge_id="edge-2",
            request_id="b" * 32,
            requested_by="t",
            sent_at=datetime.now(UTC),
            device="x",
        )
        .model_dump_json()
        .encode(),
        "the request names edge edge-2, not this one",
    ),
]


@pytest.mark.parametrize(
    ("payload", "answer"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE]
)
def test_a_hostile_request_is_answered_with_the_reason_or_counted(
    payload: bytes, answer: str | None
) -> None:
    probes, sent = probes_of({})
    probes.offer(payload)
    assert probes.queue.empty()
    if answer is None:
        assert sent == [] and probes.ignored == 1 and probes.last_ignored
    else:
        assert [r.error for r in sent] == [answer] and probes.ignored == 0


async def test_a_reader_that_capture_holds_is_not_opened_twice() -> None:
    gate = yaml.safe_load((LIBRARY / "rfid-dock-door-gate.yaml").read_text())
    running = {"gate-1": parse_profile(gate)}
    probes, _ = probes_of(running)
    asked = ProbeRequest(
        edge_id="edge-1",
        request_id="c" * 32,
        requested_by="t",
        sent_at=datetime.now(UTC),
        profile=json.dumps(gate | {"name": "gate-new"}),
    )
    result = await probes.answer(asked)
    port = gate["connection"]["port"]
    assert result.error is not None and result.tags == []
    assert result.error.startswith(f"{port} is the port of device gate-1, which capture reads")
