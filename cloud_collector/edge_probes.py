"""A probe run by an edge for a technician at the collector: the profile (a new one, or a
device of the site the edge runs) read once against the live device, through the edge.

The collector publishes a `ProbeRequest` on trace/v1/edges/{edge}/probe/request under its
provisioning identity (only collectors may publish there: the broker's ACL), having
subscribed first to trace/v1/edges/{edge}/probe/result (only that edge may publish there),
and waits for the `ProbeResult` with its request id. Nothing is retained: a probe is for
now, and an edge that is offline is a timeout that says so. A result from the edge that the
contract refuses is an error naming what is wrong with it (the edge is outside input too).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import aiomqtt
from pydantic import ValidationError

from protocols.mqtt import topics
from protocols.mqtt.connection import BrokerSettings
from protocols.mqtt.contract import PROBE_MARGIN_S, ProbeRequest, ProbeResult

log = logging.getLogger(__name__)

# The edge ends its probe at the listening time plus PROBE_MARGIN_S; its answer may take a
# moment more (TRACE_PROVISIONING_PROBE_WAIT_S, this by default).
WAIT_MARGIN_S = PROBE_MARGIN_S + 5.0
MAX_RESULT_BYTES = 2 * 1024 * 1024


class ProbeUnanswered(RuntimeError):
    """No usable result came back: the broker refused us (503), the edge did not answer in
    time (504), or answered with what the contract refuses (502); the message names the
    fix."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def ask_edge(
    broker: BrokerSettings, request: ProbeRequest, margin_s: float = WAIT_MARGIN_S
) -> ProbeResult:
    """Publish the request and wait for the edge's result (at most the listening time plus
    `margin_s`)."""
    edge = request.edge_id
    wait_s = request.seconds + margin_s
    try:
        async with aiomqtt.Client(
            **broker.client_args(),  # type: ignore[arg-type]
            identifier=broker.username,
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            # Subscribed before asking: a fast edge's answer is not missed.
            await client.subscribe(topics.probe_result(edge), qos=1)
            await client.publish(
                topics.probe_request(edge), request.model_dump_json(exclude_none=True), qos=1
            )
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    result = _read_result(message.payload, request)
                    if result is not None:
                        return result
    except TimeoutError:
        raise ProbeUnanswered(
            f"edge {edge} did not answer the probe within {wait_s:.0f} s: is it online "
            f"(`tracectl edges {edge}`), and does it run a version that probes?",
            504,
        ) from None
    except aiomqtt.MqttError as err:
        raise ProbeUnanswered(
            f"the broker did not take the probe ({type(err).__name__}: {err}): is it running, "
            f"and is {broker.username!r} a collector identity in force?",
            503,
        ) from err
    raise ProbeUnanswered(f"the broker closed the connection before edge {edge} answered", 503)


def _read_result(payload: object, request: ProbeRequest) -> ProbeResult | None:
    """The edge's result for this request; None for another request's; ProbeUnanswered for
    a result the contract refuses."""
    if not isinstance(payload, bytes | bytearray):
        payload = str(payload).encode()
    if len(payload) > MAX_RESULT_BYTES:
        raise ProbeUnanswered(
            f"edge {request.edge_id} answered with {len(payload)} bytes, over "
            f"{MAX_RESULT_BYTES}: probe fewer tags or listen for fewer seconds",
            502,
        )
    try:
        result = ProbeResult.model_validate_json(payload)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(message)"
        # Another probe's garbled answer looks the same: only ours may fail ours.
        if request.request_id.encode() not in payload:
            return None
        raise ProbeUnanswered(
            f"edge {request.edge_id} answered with a result the contract refuses "
            f"({where}: {first['msg']}; first bytes {bytes(payload[:200])!r}): update the "
            "edge agent to this collector's contract",
            502,
        ) from None
    if result.request_id != request.request_id:
        return None
    if result.edge_id != request.edge_id:
        raise ProbeUnanswered(
            f"the result on edge {request.edge_id}'s topic names edge {result.edge_id}", 502
        )
    return result


def request_for(
    edge_id: str,
    request_id: str,
    by: str,
    seconds: float,
    device: str | None = None,
    profile: str | None = None,
) -> ProbeRequest:
    return ProbeRequest(
        edge_id=edge_id,
        request_id=request_id,
        requested_by=by[:128] or "unknown",
        sent_at=datetime.now(UTC),
        seconds=seconds,
        device=device,
        profile=profile,
    )
