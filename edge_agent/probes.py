"""Probes the collector asks of this edge: a profile read once against the live device,
with the code `tracectl profile probe` runs on the line PC (protocols/probe.py).

A request arrives on trace/v1/edges/{edge}/probe/request (only collectors may publish
there: the broker's ACL) naming a device of the site this edge runs, or carrying a profile
not yet in it. The edge probes one request at a time, each bounded by its listening time
plus PROBE_MARGIN_S, and publishes the `ProbeResult` on .../probe/result (only this edge may
publish there). Running capture is never disturbed: the probe opens a connection of its own
(a Modbus TCP or OPC UA device takes several; several RTU devices already share one port
one request at a time), and a device that streams from a serial port capture holds (an
RFID reader, a scanner) is not opened twice: the answer says where its reads are.

Whatever arrives is outside input: a request the contract refuses gets an answer with the
reason when its request id can be read, else it is counted and logged; nothing a request
or a driver does ends the edge.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from device_profiles.schema import DeviceProfile, ProfileError, parse_profile
from device_profiles.sites import canonical_json, content_hash
from protocols.mqtt import topics
from protocols.mqtt.contract import PROBE_MARGIN_S, ProbeRequest, ProbeResult
from protocols.probe import ProbeFailed, clean, probe, result_of
from protocols.profile import RefersToFiles
from protocols.registry import Registry

log = logging.getLogger(__name__)

WAITING = 4  # requests queued behind the one running; more are answered "busy"
MAX_REQUEST_BYTES = 2 * 1024 * 1024

Reply = Callable[[str, str], bool]  # (topic, payload) -> queued for the broker


class EdgeProbes:
    def __init__(
        self,
        edge_id: str,
        running: Callable[[], dict[str, DeviceProfile]],
        reply: Reply,
        registry: Registry,
        files_at: Path | None = None,
    ) -> None:
        self.edge_id = edge_id
        self.running = running  # the site's devices now, by name
        self.reply = reply
        self.registry = registry
        self.files_at = files_at
        self.queue: asyncio.Queue[ProbeRequest] = asyncio.Queue(maxsize=WAITING)
        self.probed = 0
        self.ignored = 0  # requests without a readable request id: nobody to answer
        self.last_ignored: str | None = None

    def status(self) -> dict[str, object]:
        return {"probed": self.probed, "ignored": self.ignored, "last_ignored": self.last_ignored}

    def offer(self, payload: object) -> None:
        """A message of the probe request topic (the publisher's callback: never raises)."""
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            if len(raw) > MAX_REQUEST_BYTES:
                raise ValueError(f"{len(raw)} bytes, over {MAX_REQUEST_BYTES}")
            request = ProbeRequest.model_validate_json(raw)
        except (ValidationError, ValueError) as err:
            self._refuse_unreadable(raw, err)
            return
        if request.edge_id != self.edge_id:
            self._answer(request, f"the request names edge {request.edge_id}, not this one")
            return
        try:
            self.queue.put_nowait(request)
        except asyncio.QueueFull:
            self._answer(
                request,
                f"this edge is busy with {WAITING + 1} probes: ask again in a few seconds",
            )

    def _refuse_unreadable(self, raw: bytes | bytearray, err: Exception) -> None:
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        if isinstance(err, ValidationError):
            first = err.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "(message)"
            reason = f"{where}: {first['msg']}"
        request_id = _request_id(raw)
        if request_id is None:
            self.ignored += 1
            self.last_ignored = reason
            if self.ignored <= 10 or self.ignored % 100 == 0:
                log.warning("probe request ignored (%d so far): %s", self.ignored, reason)
            return
        self._publish(_failure(self.edge_id, request_id, None, f"the request is refused: {reason}"))

    def _answer(self, request: ProbeRequest, error: str) -> None:
        self._publish(_failure(self.edge_id, request.request_id, request.device, error))

    def _publish(self, result: ProbeResult) -> None:
        payload = result.model_dump_json(exclude_none=True)
        if not self.reply(topics.probe_result(self.edge_id), payload):
            log.warning(
                "probe %s: its result could not be queued for the broker", result.request_id
            )

    async def run(self) -> None:
        """One probe at a time, each bounded, until cancelled."""
        while True:
            request = await self.queue.get()
            try:
                result = await self.answer(request)
            except Exception as err:  # e.g. a device's text the contract refuses
                log.exception("probe %s", request.request_id)
                result = _failure(
                    self.edge_id, request.request_id, request.device, f"{type(err).__name__}: {err}"
                )
            self._publish(result)
            self.probed += 1

    async def answer(self, request: ProbeRequest) -> ProbeResult:
        """The result of one request: what the device answered, or why it could not run."""
        try:
            profile, sha256 = self._profile(request)
        except ProbeRefused as err:
            return _failure(self.edge_id, request.request_id, request.device, str(err))
        # A copy of its own name: a device on a shared RS-485 line is attached by name, and
        # the probe's going must not take the running device off the line.
        probing = profile.model_copy(update={"name": f"probe:{profile.name}"[:64]})
        try:
            async with asyncio.timeout(request.seconds + PROBE_MARGIN_S):
                report = await probe(probing, request.seconds, self.registry)
        except ProbeFailed as err:
            error = str(err).replace(probing.name, profile.name)
        except TimeoutError:
            error = (
                f"the probe of {profile.name} took over {request.seconds + PROBE_MARGIN_S:.0f} "
                "s and was stopped: check the device's address and its timeout_s"
            )
        except Exception as err:  # a driver's bug must not end the edge: said, not swallowed
            log.exception("probe of %s failed", profile.name)
            error = f"the probe of {profile.name} failed: {type(err).__name__}: {err}"
        else:
            report.device = profile.name
            return result_of(report, profile, self.edge_id, request.request_id, sha256)
        return _failure(
            self.edge_id, request.request_id, profile.name, error[:2000], profile.protocol, sha256
        )

    def _profile(self, request: ProbeRequest) -> tuple[DeviceProfile, str]:
        running = self.running()
        if request.device is not None:
            profile = running.get(request.device)
            if profile is None:
                names = ", ".join(sorted(running)) or "none"
                raise ProbeRefused(
                    f"device {request.device} is not in the site this edge runs (its devices: "
                    f"{names}): probe its profile instead"
                )
        else:
            assert request.profile is not None  # the contract holds one or the other
            try:
                profile = parse_profile(json.loads(request.profile), "profile")
            except (ProfileError, ValueError) as err:
                problems = getattr(err, "problems", None) or [str(err)]
                raise ProbeRefused("the profile is invalid: " + "; ".join(problems)) from err
            if self.files_at is not None and isinstance(profile, RefersToFiles):
                profile = profile.files_beside(self.files_at)
        self._not_held_by_capture(profile, running)
        sha256 = content_hash(canonical_json(profile.model_dump(mode="json")))
        return profile, sha256

    def _not_held_by_capture(
        self, profile: DeviceProfile, running: dict[str, DeviceProfile]
    ) -> None:
        """A streaming device's port read twice would split its reads with capture."""
        if self.registry.entry_of(profile).events is None:
            return
        port = _port(profile)
        for name, other in running.items():
            if port is not None and _port(other) == port:
                raise ProbeRefused(
                    f"{port} is the port of device {name}, which capture reads now: a probe "
                    "would take reads from capture. Its reads show in the edge's status "
                    f"(`tracectl edges {self.edge_id}`); probe it before it goes live"
                )


class ProbeRefused(ValueError):
    """A request this edge will not run, with the reason."""


def _port(profile: DeviceProfile) -> str | None:
    connection = getattr(profile, "connection", None)
    for key in ("port", "path"):
        value = getattr(connection, key, None)
        if isinstance(value, str):
            return value
    return None


def _request_id(raw: bytes | bytearray) -> str | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    value = data.get("request_id") if isinstance(data, dict) else None
    if isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value):
        return value
    return None


def _failure(
    edge_id: str,
    request_id: str,
    device: str | None,
    error: str,
    protocol: str = "unknown",
    sha256: str | None = None,
) -> ProbeResult:
    return ProbeResult(
        edge_id=edge_id,
        request_id=request_id,
        device=device or "unknown",
        protocol=protocol,
        probed_at=datetime.now(UTC),
        profile_sha256=sha256,
        error=clean(error, 2000) or "the probe failed",
    )
