"""What a collector takes from the broker, and how it gives each message back.

A message is acknowledged to the broker (PUBACK) only once the collector has settled it
(committed, refused, or kept as a dead letter): until then the broker keeps it in flight,
and when the collector's connection dies, the broker drops it with the clean session and
the edge sends it again. The collector holds at most `bound` messages taken and unsettled:

- it asks the broker for that much (MQTT v5 Receive Maximum, in the CONNECT properties);
- and it stops reading the broker's socket while it holds that many, reading on once it
  holds fewer. A broker that honours the Receive Maximum never needs the second. Mosquitto
  2.0.11 (Debian 12's) honours it for the first flight only: each PUBACK then releases up
  to the maximum of queued messages at once (measured: 6 held, 83 a moment later). Unread,
  the broker's messages wait in TCP's buffers and in the broker's queue, and from there
  in the edges' outboxes.

While the socket is not read, neither are the broker's PUBACKs of the collector's own
acks: an ack is therefore sent without waiting for them (`send_ack`), so that nothing the
collector does to settle what it holds waits for the socket it has stopped reading. A
stall longer than the keepalive ends the connection (paho misses its PINGRESP); the
collector's will then tells the edges to send what it held to the living collectors.

aiomqtt 2.5 has neither manual acknowledgement nor a way to pause reading: both are done
here on its paho client (`client._client`) and on the reader it registers with asyncio.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt

from protocols.mqtt import topics
from protocols.mqtt.contract import Ack

log = logging.getLogger(__name__)


def _size(payload: object) -> int:
    return len(payload) if isinstance(payload, bytes | bytearray | str) else 0


class Intake:
    """Counts what `client` delivers into `held` and `held_bytes` (a callable's view of a
    counter is not enough: the count must move inside paho's read, before the next packet
    is read). It stops reading at `bound` messages or `bound_bytes` bytes of payload
    (whichever comes first: the messages' count bounds small messages, their size large
    ones)."""

    def __init__(
        self,
        client: aiomqtt.Client,
        bound: int,
        counted: Callable[[int], None],
        bound_bytes: int | None = None,
    ) -> None:
        self.bound = bound
        self.bound_bytes = bound_bytes
        self.held = 0
        self.held_bytes = 0
        self._counted = counted
        self._paho = client._client
        self._paho.manual_ack_set(True)
        self._deliver: Any = self._paho.on_message  # aiomqtt's: into its queue
        self._paho.on_message = self._on_message
        # paho reads as many packets per readiness as it has messages in flight: while
        # paused, it reads none (a packet half read stays in paho's state for later).
        self._read_packet = self._paho._packet_read
        self._paho._packet_read = self._packet_read  # type: ignore[method-assign]
        self._paused: tuple[asyncio.AbstractEventLoop, int, Any, tuple[Any, ...]] | None = None
        self._cannot_pause = False

    @property
    def paused(self) -> bool:
        return self._paused is not None

    def _packet_read(self) -> Any:
        if self._paused is not None:
            return mqtt.MQTTErrorCode.MQTT_ERR_AGAIN
        return self._read_packet()

    def _full(self) -> bool:
        return self.held >= self.bound or (
            self.bound_bytes is not None and self.held_bytes >= self.bound_bytes
        )

    def _on_message(self, paho: Any, userdata: Any, message: Any) -> None:
        self._deliver(paho, userdata, message)
        self.held += 1
        self.held_bytes += _size(message.payload)
        self._counted(self.held)
        if self._full():
            self._pause()

    def release(self, message: aiomqtt.Message) -> None:
        """The message is settled: its PUBACK, and one place more for the next."""
        if message.qos > 0:
            self._paho.ack(message.mid, message.qos)
        self.held -= 1
        self.held_bytes -= _size(message.payload)
        self._counted(self.held)
        if self._paused is not None and not self._full():
            self._resume()

    async def send_ack(self, ack: Ack) -> None:
        """Publish an ack (QoS 1) without waiting for the broker's PUBACK of it: handed to
        paho, which sends it and keeps it until the broker has it. Not aiomqtt's publish:
        its task, future and timeout per ack were a fifth of the collector's work at 100
        readings a message."""
        info = self._paho.publish(topics.ack(ack.edge_id), ack.model_dump_json(), qos=1)
        if info.rc != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
            # The connection is gone (the intake sees it too): the edge sends it again.
            log.warning("an ack was not published: %s", mqtt.error_string(info.rc))

    def _pause(self) -> None:
        if self._paused is not None or self._cannot_pause:
            return
        try:
            loop = asyncio.get_running_loop()
            sock = self._paho.socket()
            if sock is None:
                return
            fd = sock.fileno()
            reader = loop._selector.get_key(fd).data[0]  # type: ignore[attr-defined]
            callback, args = reader._callback, reader._args  # cancelling the handle clears them
            loop.remove_reader(fd)
            self._paused = (loop, fd, callback, args)
        except (AttributeError, KeyError, ValueError, OSError, RuntimeError) as err:
            self._cannot_pause = True
            log.warning(
                "cannot stop reading the broker's socket (%s: %s): the collector relies on "
                "the broker's Receive Maximum alone",
                type(err).__name__,
                err,
            )

    def _resume(self) -> None:
        assert self._paused is not None
        loop, fd, callback, args = self._paused
        self._paused = None
        sock = self._paho.socket()
        if sock is not None and sock.fileno() == fd:
            loop.add_reader(fd, callback, *(args or ()))

    def close(self) -> None:
        """Leaving: read again (the last words need their PUBACK)."""
        if self._paused is not None:
            self._resume()
