"""MQTT: every stream's events (and, optionally, its detection messages) published to a
broker through ``aiomqtt`` (paho-mqtt underneath).

``RTC_MQTT_URL`` = ``mqtt://[user:password@]host[:1883][/prefix]`` or ``mqtts://...``
(TLS, port 8883 by default; the system's CAs, or ``RTC_MQTT_CA`` for a private one).
Topics: ``<prefix>/<stream id>/events`` at QoS 1 (the broker acknowledges each: that is a
delivery), ``<prefix>/<stream id>/detections`` at QoS 0 when ``RTC_MQTT_DETECTIONS`` is on.
The payload is the message's JSON (events with ``stream_id`` added).

- **Bounded**: one queue of ``queue`` messages; when full the oldest is dropped and counted
  (``rtc_event_drops_total{output="mqtt",reason="queue_full"}``). ``publish`` only appends.
- **Reconnects**: one task connects, drains the queue and, when the broker goes away,
  reconnects with backoff (1 s doubling to ``reconnect_max``). While it is down, the queue
  fills and drops its oldest, counted: a broker that is down costs counted drops, never a
  stream. A message whose publish failed stays at the head and is sent after reconnecting
  (a lost connection is noticed at the next publish, or by the client's keep-alive).
- The broker URL is the operator's setting, not a client's, so no SSRF policy applies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from ..metrics import Metrics

log = logging.getLogger(__name__)

OUTPUT = "mqtt"


@dataclass(frozen=True)
class MqttBroker:
    host: str
    port: int
    tls: bool
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    prefix: str = "rtc"


def parse_mqtt_url(url: str) -> MqttBroker:
    """``mqtt://`` or ``mqtts://`` URL -> broker; ``ValueError`` saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"the MQTT URL does not parse: {exc}") from exc
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("the MQTT URL must be mqtt://host[:port][/prefix] or mqtts://...")
    if not parts.hostname:
        raise ValueError("the MQTT URL has no host")
    if "?" in url or "#" in url:
        raise ValueError("the MQTT URL takes no ?query or #fragment (nor wildcards in the prefix)")
    prefix = parts.path.strip("/") or "rtc"
    if any(c in prefix for c in "+#") or "//" in prefix:
        raise ValueError("the MQTT topic prefix may not contain '+', '#' or empty levels")
    tls = parts.scheme == "mqtts"
    return MqttBroker(parts.hostname, port or (8883 if tls else 1883), tls,
                      unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password is not None else None, prefix)


@dataclass(frozen=True)
class MqttConfig:
    #: Also publish each detection message (QoS 0) to ``<prefix>/<id>/detections``.
    detections: bool = False
    #: Messages waiting for the broker; the oldest is dropped (counted) beyond it.
    queue: int = 1024
    #: Longest wait, in seconds, between reconnect attempts.
    reconnect_max: float = 30.0
    #: CA certificates (PEM) for ``mqtts://`` with a private CA; None: the system's.
    ca_file: Path | None = None
    #: Seconds a publish may wait for the broker's acknowledgement.
    timeout: float = 10.0


class Mqtt:
    """The MQTT output (``EventSink``)."""

    def __init__(self, broker: MqttBroker, config: MqttConfig, metrics: Metrics) -> None:
        self.broker = broker
        self.config = config
        self.wants_detections = config.detections
        self._metrics = metrics
        self._queue: deque[tuple[str, bytes, int]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Whether the client is connected now (for tests and logs).
        self.connected = False
        self.delivered = 0
        self.dropped = 0

    def publish(self, stream_id: str, message: dict[str, Any], webhooks: Sequence[Any] = ()) -> None:
        kind = message.get("type")
        if kind == "event":
            topic, qos, body = "events", 1, {**message, "stream_id": stream_id}
        elif kind == "detections" and self.config.detections:
            topic, qos, body = "detections", 0, message
        else:
            return
        if len(self._queue) >= self.config.queue:
            self._queue.popleft()
            self._drop("queue_full")
        payload = json.dumps(body, separators=(",", ":")).encode()
        self._queue.append((f"{self.broker.prefix}/{stream_id}/{topic}", payload, qos))
        self._ready.set()

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self._metrics.event_drops.labels(OUTPUT, reason).inc()

    def _tls(self) -> ssl.SSLContext | None:
        if not self.broker.tls:
            return None
        return ssl.create_default_context(cafile=str(self.config.ca_file) if self.config.ca_file else None)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt output")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        delay = 1.0
        failing = False
        identifier = f"rtc-yolo-{uuid.uuid4().hex[:12]}"
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port, username=self.broker.username,
                                          password=self.broker.password, identifier=identifier,
                                          tls_context=self._tls(), timeout=self.config.timeout) as client:
                    self.connected = True
                    if failing:
                        log.info("MQTT broker %s:%d connected again", self.broker.host, self.broker.port)
                    failing, delay = False, 1.0
                    await self._drain(client)
            except aiomqtt.MqttError as exc:
                if not failing:
                    failing = True
                    log.warning("MQTT broker %s:%d: %s (reconnecting; messages beyond the queue of %d are "
                                "dropped and counted)", self.broker.host, self.broker.port, exc, self.config.queue)
                self._metrics.count_error("mqtt_disconnected")
            finally:
                self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max)

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            topic, payload, qos = self._queue[0]
            await client.publish(topic, payload, qos=qos, timeout=self.config.timeout)
            if self._queue and self._queue[0][0] is topic and self._queue[0][1] is payload:
                self._queue.popleft()  # (a full queue may have dropped it meanwhile)
            if qos:
                self.delivered += 1
                self._metrics.event_deliveries.labels(OUTPUT).inc()
