"""OPC UA driver over asyncua: poll (read all tags in one request) or subscribe (the server
reports changes).

Every asyncua, socket and timeout exception is translated here, once, in `_boundary`: a
status that names a profile or certificate problem is `DeviceMisconfigured` with the fix;
everything else (refused, timed out, session lost) is `DeviceUnavailable`. A bad status
for one tag is a bad-quality sample for that tag, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

from asyncua import Client, Node, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeNotif, Subscription
from cryptography.hazmat.primitives.serialization import Encoding

from protocols.driver import (
    Deliver,
    DeviceMisconfigured,
    DeviceUnavailable,
    ProbeReading,
    Sample,
)
from protocols.opcua.certificates import ClientIdentity, load_certificate, load_client_identity
from protocols.opcua.codec import (
    configuration_fix,
    data_change_filter,
    parse_node_id,
    queue_size,
    status_text,
    to_sample,
)
from protocols.opcua.endpoints import MODES, POLICIES, choose_endpoint, trusted_server_certificate
from protocols.opcua.profile import OpcUaProfile, OpcUaTag

log = logging.getLogger(__name__)

# Services a server refuses when one request asks for too many nodes at once; the read is
# then repeated node by node for the rest of the session.
_TOO_MANY_AT_ONCE = {
    ua.StatusCodes.BadTooManyOperations,
    ua.StatusCodes.BadRequestTooLarge,
    ua.StatusCodes.BadResponseTooLarge,
    ua.StatusCodes.BadEncodingLimitsExceeded,
}

# The server sends a keep-alive when it has had nothing to report for this long, so a
# silent subscription is distinguishable from a dead one.
KEEPALIVE_TARGET_S = 5.0
# How long the server keeps a subscription (and a session) whose client went silent.
LIFETIME_TARGET_S = 60.0
# How often `subscribe` looks at the connection when no data arrives.
WATCH_TICK_S = 0.5


class _Notifications:
    """asyncua's subscription handler: turns data changes into samples for `subscribe`."""

    def __init__(self, tags: dict[int, OpcUaTag], batch_tag: str | None) -> None:
        self.tags = tags
        self.batch_tag = batch_tag
        self.pending: list[Sample] = []
        self.arrived = asyncio.Event()
        self.ended: str | None = None

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        tag = self.tags.get(data.monitored_item.ClientHandle)
        if tag is None:
            return
        value = data.monitored_item.Value
        self.pending.append(to_sample(tag, value, batch_source=tag.name == self.batch_tag))
        self.arrived.set()

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if status.Status.is_good():
            return
        self.ended = f"the subscription ended: {status_text(status.Status.value)}"
        self.arrived.set()

    def take(self) -> list[Sample]:
        batch, self.pending = self.pending, []
        self.arrived.clear()
        return batch


class OpcUaDriver:
    """Reads or subscribes to the tags of one OPC UA profile.

    Implements `PollingDriver` (open/read/close) and `SubscribingDriver` (subscribe).
    """

    def __init__(self, profile: OpcUaProfile) -> None:
        self.name = profile.name
        self.profile = profile
        self.tags = list(profile.tags)
        self._batch_tag = profile.batch_source.tag if profile.batch_source else None
        self._client: Client | None = None
        self._nodes: list[Node] = []
        self._per_node_reads = False
        self._lost: str | None = None
        # Without a pinned server certificate the first one seen is trusted, and a later
        # change is refused: a swapped certificate is exactly what security is for.
        self._server_certificate: bytes | None = None

    @property
    def endpoint(self) -> str:
        return self.profile.connection.endpoint

    @property
    def _timeout_s(self) -> float:
        return self.profile.connection.timeout_s

    # -- the one place exceptions are translated -------------------------------------------

    @contextlib.contextmanager
    def _boundary(self, doing: str, unreachable: str = "") -> Iterator[None]:
        """Translate what asyncua, sockets and timeouts raise while `doing` something;
        `unreachable` is the advice for a refused or silent server."""
        try:
            yield
        except (DeviceUnavailable, DeviceMisconfigured):
            raise
        except ua.UaStatusCodeError as err:
            fix = configuration_fix(err.code)
            if fix:
                raise DeviceMisconfigured(
                    f"{self.name}: {doing}: {status_text(err.code)}: {fix}"
                ) from err
            raise DeviceUnavailable(f"{self.name}: {doing}: {status_text(err.code)}") from err
        except TimeoutError as err:
            raise DeviceUnavailable(
                f"{self.name}: {doing}: no answer within {self._timeout_s:g}s{unreachable}"
            ) from err
        except OSError as err:  # refused, unreachable, reset; ConnectionError is one
            reason = err.strerror or str(err) or type(err).__name__
            raise DeviceUnavailable(f"{self.name}: {doing}: {reason}{unreachable}") from err
        except ua.UaError as err:
            raise DeviceUnavailable(f"{self.name}: {doing}: {err}") from err

    # -- PollingDriver --------------------------------------------------------------------

    async def open(self) -> None:
        await self.close()
        try:
            node_ids, identity, pinned = self._prepare()
        except DeviceMisconfigured as err:
            raise DeviceMisconfigured(f"{self.name}: {err}") from err
        conn = self.profile.connection
        security = conn.security
        # asyncua's watchdog probes the server this often and waits as long for the answer:
        # half the timeout notices a silent server within about one timeout.
        client = Client(
            self.endpoint,
            timeout=self._timeout_s,
            watchdog_intervall=min(max(self._timeout_s / 2, 0.5), 5.0),
        )
        client.name = client.description = f"lot-trace edge ({self.name})"
        # The server drops the session of an edge that vanished after this long; it must
        # outlast the longest silence of a healthy subscription (its keep-alive).
        client.session_timeout = int(
            1000 * max(LIFETIME_TARGET_S, 3 * self.profile.publishing_interval_s)
        )
        if conn.username:
            client.set_user(conn.username)
        if conn.password:
            client.set_password(conn.password)
        self._lost = None

        async def lost(exc: Exception) -> None:
            self._lost = str(exc) or type(exc).__name__

        client.connection_lost_callback = lost
        connecting = f"connecting to {self.endpoint}"
        unreachable = ": check connection.endpoint and that the server is running and reachable"
        connected = False
        try:
            with self._boundary(connecting, unreachable):
                endpoints = await client.connect_and_get_server_endpoints()
                endpoint = choose_endpoint(self.name, conn, endpoints)
                if identity is not None:
                    self._server_certificate = trusted_server_certificate(
                        self.name, conn, endpoint, pinned, self._server_certificate
                    )
                    client.application_uri = identity.application_uri
                    await client.set_security(
                        POLICIES[security.policy],
                        identity.certificate,
                        identity.private_key,
                        server_certificate=self._server_certificate,
                        mode=MODES[security.mode],
                    )
                await client.connect()
                connected = True
            with self._boundary(f"resolving node ids on {self.endpoint}"):
                self._nodes = [client.get_node(n) for n in await self._resolve(client, node_ids)]
        except BaseException:  # also a cancelled open must not leave a socket behind
            if connected:
                await self._disconnect(client)
            else:
                client.disconnect_socket()
            raise
        self._client = client
        self._per_node_reads = False

    def _prepare(self) -> tuple[list[ua.NodeId], ClientIdentity | None, bytes | None]:
        """Everything that can be checked without the server, checked before connecting."""
        node_ids = [parse_node_id(tag) for tag in self.tags]
        security = self.profile.connection.security
        if security.mode == "None":
            return node_ids, None, None
        assert security.certificate is not None and security.private_key is not None
        identity = load_client_identity(security.certificate, security.private_key)
        pinned = None
        if security.server_certificate is not None:
            pinned = load_certificate(
                security.server_certificate, "server certificate", "server_certificate"
            ).public_bytes(Encoding.DER)
        return node_ids, identity, pinned

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._disconnect(client)

    async def _disconnect(self, client: Client) -> None:
        # A server that stopped answering cannot confirm the goodbye: do not wait for it.
        healthy = client.state is UaClientState.CONNECTED
        try:
            async with asyncio.timeout(self._timeout_s if healthy else min(1.0, self._timeout_s)):
                await client.disconnect()  # also stops asyncua's watchdog tasks
        except Exception as err:
            # Closing a session that is already gone fails by nature; the socket still goes.
            log.debug("%s: closing the OPC UA session: %r", self.name, err)
        finally:
            client.disconnect_socket()

    async def read(self) -> list[Sample]:
        client = self._connected()
        with self._boundary(f"reading {len(self.tags)} tags from {self.endpoint}"):
            values = await self._read_values(client)
        return [
            to_sample(tag, value, batch_source=tag.name == self._batch_tag)
            for tag, value in zip(self.tags, values, strict=True)
        ]

    async def probe(self) -> list[ProbeReading]:
        """Every tag once, with the node's value as the server holds it (its type, value
        and status) beside the decoded sample."""
        client = self._connected()
        with self._boundary(f"reading {len(self.tags)} tags from {self.endpoint}"):
            values = await self._read_values(client)
        readings = []
        for tag, value in zip(self.tags, values, strict=True):
            sample = to_sample(tag, value, batch_source=tag.name == self._batch_tag)
            code = value.StatusCode.value if value.StatusCode is not None else 0
            variant = value.Value
            held = "null" if variant is None else f"{variant.VariantType.name} {variant.Value!r}"
            readings.append(
                ProbeReading(sample, tag.node_id, f"{held[:160]} ({status_text(code)})")
            )
        return readings

    async def _read_values(self, client: Client) -> list[ua.DataValue]:
        if not self._per_node_reads:
            try:
                return await client.read_attributes(self._nodes)
            except ua.UaStatusCodeError as err:
                if err.code not in _TOO_MANY_AT_ONCE:
                    raise
                log.info(
                    "%s: the server refuses to read %d nodes at once (%s): reading node by node",
                    self.name,
                    len(self._nodes),
                    status_text(err.code),
                )
                self._per_node_reads = True
        values = []
        for node in self._nodes:
            values.extend(await client.read_attributes([node]))
        return values

    # -- SubscribingDriver ----------------------------------------------------------------

    async def subscribe(self, deliver: Deliver) -> None:
        """Deliver the initial values, then every change; return only by raising
        `DeviceUnavailable` when the session or subscription is lost."""
        client = self._connected()
        profile = self.profile
        publishing_s = profile.publishing_interval_s
        keepalive_count = max(1, math.ceil(KEEPALIVE_TARGET_S / publishing_s))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=publishing_s * 1000,
            RequestedLifetimeCount=max(
                3 * keepalive_count, math.ceil(LIFETIME_TARGET_S / publishing_s)
            ),
            RequestedMaxKeepAliveCount=keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        handles = {handle: tag for handle, tag in enumerate(self.tags, start=1)}
        notifications = _Notifications(handles, self._batch_tag)
        with self._boundary(f"subscribing to {len(self.tags)} tags on {self.endpoint}"):
            subscription = await client.create_subscription(params, notifications)
        try:
            with self._boundary(f"creating monitored items on {self.endpoint}"):
                results = await subscription.create_monitored_items(
                    [self._monitored_item(handle, tag) for handle, tag in handles.items()]
                )
            self._refused_items(notifications, results)
            await self._watch(client, subscription, notifications, deliver)
        finally:
            if client.state is UaClientState.CONNECTED:
                with contextlib.suppress(Exception):  # best effort: close() ends it anyway
                    async with asyncio.timeout(self._timeout_s):
                        await subscription.delete()

    def _monitored_item(self, handle: int, tag: OpcUaTag) -> ua.MonitoredItemCreateRequest:
        sampling_s = (
            tag.sampling_interval_s
            if tag.sampling_interval_s is not None
            else self.profile.sampling_interval_s
        )
        parameters = ua.MonitoringParameters(
            ClientHandle=handle,
            SamplingInterval=sampling_s * 1000,
            QueueSize=queue_size(self.profile.publishing_interval_s, sampling_s),
            DiscardOldest=True,
        )
        flt = data_change_filter(tag)
        if flt is not None:
            parameters.Filter = flt
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(
                NodeId=self._nodes[handle - 1].nodeid, AttributeId=ua.AttributeIds.Value
            ),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=parameters,
        )

    def _refused_items(
        self, notifications: _Notifications, results: list[int | ua.StatusCode]
    ) -> None:
        """A tag the server will not monitor is a bad sample naming why, not a silent gap;
        when it refuses every tag the profile does not match the server at all."""
        refused = []
        for tag, result in zip(self.tags, results, strict=True):
            if isinstance(result, ua.StatusCode):
                sample = to_sample(tag, ua.DataValue(StatusCode=result))
                log.warning("%s: tag %s not monitored: %s", self.name, tag.name, sample.detail)
                notifications.pending.append(sample)
                refused.append(f"{tag.name}: {sample.detail}")
        if refused and len(refused) == len(self.tags):
            raise DeviceMisconfigured(
                f"{self.name}: the server at {self.endpoint} monitors none of the tags: "
                + "; ".join(refused)
            )
        if refused:
            notifications.arrived.set()

    async def _watch(
        self,
        client: Client,
        subscription: Subscription,
        notifications: _Notifications,
        deliver: Deliver,
    ) -> None:
        keepalive_s = (
            subscription.parameters.RequestedPublishingInterval
            / 1000
            * max(1, subscription.parameters.RequestedMaxKeepAliveCount)
        )
        silent_limit_s = 2 * keepalive_s + self._timeout_s
        started = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_TICK_S):
                    await notifications.arrived.wait()
            # Let the handler tasks of the same publish response add their samples first.
            await asyncio.sleep(0)
            batch = notifications.take()
            if batch:
                deliver(batch)
            if client.state is not UaClientState.CONNECTED:
                raise DeviceUnavailable(
                    f"{self.name}: lost the connection to {self.endpoint} "
                    f"({self._lost or client.state.value})"
                )
            if notifications.ended:
                raise DeviceUnavailable(f"{self.name}: {self.endpoint}: {notifications.ended}")
            silent_s = time.monotonic() - (subscription.last_publish_at or started)
            if silent_s > silent_limit_s:
                raise DeviceUnavailable(
                    f"{self.name}: no data or keep-alive from {self.endpoint} for "
                    f"{silent_s:.0f}s (expected every {keepalive_s:g}s)"
                )

    # -- helpers --------------------------------------------------------------------------

    def _connected(self) -> Client:
        client = self._client
        if client is None or client.state is not UaClientState.CONNECTED:
            raise DeviceUnavailable(
                f"{self.name}: not connected to {self.endpoint}"
                + (f" ({self._lost})" if self._lost else "")
            )
        return client

    async def _resolve(self, client: Client, node_ids: list[ua.NodeId]) -> list[ua.NodeId]:
        """Node ids written with a namespace URI (nsu=...) become index-based ones: the URI
        is stable across server changes, the index is not."""
        if not any(getattr(n, "NamespaceUri", None) for n in node_ids):
            return node_ids
        namespaces = await client.get_namespace_array()
        resolved = []
        for tag, node_id in zip(self.tags, node_ids, strict=True):
            uri = getattr(node_id, "NamespaceUri", None)
            if not uri:
                resolved.append(node_id)
                continue
            if uri not in namespaces:
                raise DeviceMisconfigured(
                    f"{self.name}: tag {tag.name}: namespace {uri!r} is not on the server at "
                    f"{self.endpoint} (it has {', '.join(namespaces)}): correct the node_id"
                )
            resolved.append(
                ua.NodeId(node_id.Identifier, ua.Int16(namespaces.index(uri)), node_id.NodeIdType)
            )
        return resolved
