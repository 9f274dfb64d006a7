"""Webhooks: each event POSTed as JSON to HTTP receivers, signed, bounded, retried.

Body: the event message (``{"type": "event", "event": "line_cross", ...}``) with
``"stream_id"`` added. Header ``X-RTC-Signature: sha256=<hex HMAC-SHA256 of the body>``
with the target's secret (none without one), so a receiver can check that the server sent
it (compare in constant time, on the raw body).

- **Bounded**: each target has a queue of ``queue`` events; when it is full the oldest is
  dropped and counted (``rtc_event_drops_total{output="webhook",reason="queue_full"}``). A
  stream's ``publish`` only appends to it; a task per target delivers.
- **Timeouts and retries**: each POST has ``timeout`` seconds; a connection error, a
  timeout or a 5xx/429 answer is retried ``retries`` times with exponential backoff
  (``backoff``, doubling, at most ``max_backoff``), then the event is dropped and counted
  (``reason="failed"``). A 4xx other than 429 is the receiver refusing that event: dropped
  at once (``reason="rejected"``). So a receiver that is down costs counted drops and at
  most ``queue`` events of memory, never a stream.
- **SSRF**: the same rules as pull sources (``ingest.policy.SourcePolicy``): ``http`` or
  ``https`` only, and every address the host resolves to must be public or in
  ``allow_networks`` — checked when the URL is configured (IP literals) and at every
  connection (a resolver that checks what it returns, so the connection goes to a checked
  address: no DNS rebinding window). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from ..ingest.policy import SourcePolicy, UrlRefused
from ..ingest.redact import redact
from ..metrics import Metrics

log = logging.getLogger(__name__)

OUTPUT = "webhook"
SIGNATURE_HEADER = "X-RTC-Signature"
#: Receivers streams may name (a stream's ``"webhooks"`` setting) that the server delivers
#: to at most, all streams together; beyond it their events are dropped (counted).
MAX_STREAM_TARGETS = 64


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    secret: str | None = None


@dataclass(frozen=True)
class WebhookConfig:
    #: Seconds one POST may take (connect, send, answer).
    timeout: float = 5.0
    #: Attempts after the first for an event that could not be delivered.
    retries: int = 3
    #: Seconds before the first retry; doubles each time, at most ``max_backoff``.
    backoff: float = 0.5
    max_backoff: float = 10.0
    #: Events waiting per target; the oldest is dropped (counted) beyond it.
    queue: int = 256
    #: Networks (CIDRs) a receiver may be in although not public (e.g. 127.0.0.0/8 in tests).
    allow_networks: tuple[str, ...] = ()


def sign(secret: str, body: bytes) -> str:
    """The ``X-RTC-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_url(url: str, policy: SourcePolicy) -> None:
    """``UrlRefused`` for a URL no webhook may have (scheme, syntax, a refused IP literal)."""
    policy.parse(url, ("http", "https"))


class CheckedResolver(AbstractResolver):
    """Resolves as aiohttp does, then refuses (``UrlRefused``) if any address is not allowed:
    aiohttp connects only to addresses this returned."""

    def __init__(self, policy: SourcePolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._policy.check_address(ipaddress.ip_address(result["host"].split("%", 1)[0]), host)
        return results

    async def close(self) -> None:
        await self._inner.close()


class _Target:
    """One receiver: its queue and the task that delivers from it."""

    def __init__(self, target: WebhookTarget, config: WebhookConfig, metrics: Metrics) -> None:
        self.target = target
        self.shown = redact(target.url)
        self.config = config
        self._metrics = metrics
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.dropped = 0
        self._failing = False

    def offer(self, body: bytes) -> None:
        if len(self._queue) >= self.config.queue:
            self._queue.popleft()
            self._drop("queue_full")
        self._queue.append(body)
        self._ready.set()

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self._metrics.event_drops.labels(OUTPUT, reason).inc()

    def start(self, session: aiohttp.ClientSession) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(session), name=f"webhook {self.shown}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, session: aiohttp.ClientSession) -> None:
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            await self._deliver(session, self._queue.popleft())

    async def _deliver(self, session: aiohttp.ClientSession, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "rtc-yolo-webhook"}
        if self.target.secret:
            headers[SIGNATURE_HEADER] = sign(self.target.secret, body)
        delay = self.config.backoff
        for attempt in range(self.config.retries + 1):
            if attempt:
                self._metrics.event_retries.labels(OUTPUT).inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.max_backoff)
            try:
                async with session.post(self.target.url, data=body, headers=headers, allow_redirects=False,
                                        timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as response:
                    status = response.status
                    await response.read()
            except UrlRefused as exc:
                self._warn(f"refused: {exc.detail}")
                self._drop("refused")
                return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self._warn(f"{type(exc).__name__}: {exc}")
                continue
            if 200 <= status < 300:
                self.delivered += 1
                self._metrics.event_deliveries.labels(OUTPUT).inc()
                if self._failing:
                    self._failing = False
                    log.info("webhook %s delivers again", self.shown)
                return
            if status != 429 and status < 500:
                self._warn(f"answered {status}; the event is dropped")
                self._drop("rejected")
                return
            self._warn(f"answered {status}")
        self._drop("failed")

    def _warn(self, what: str) -> None:
        """Logged once per failing spell, not per attempt."""
        if not self._failing:
            self._failing = True
            log.warning("webhook %s: %s (retrying; events beyond its queue are dropped and counted)",
                        self.shown, what)


class Webhooks:
    """The server's webhook targets (``RTC_WEBHOOK_URLS``) and those streams name (their
    ``"webhooks"`` setting): ``EventSink.publish(stream_id, event, webhooks)``."""

    def __init__(self, targets: Sequence[WebhookTarget], config: WebhookConfig, metrics: Metrics) -> None:
        self.config = config
        self.policy = SourcePolicy.of(config.allow_networks)
        for target in targets:
            check_url(target.url, self.policy)
        self._metrics = metrics
        self.targets = [_Target(t, config, metrics) for t in targets]
        #: Targets streams named, by (url, secret); at most ``MAX_STREAM_TARGETS``.
        self.stream_targets: dict[tuple[str, str | None], _Target] = {}
        self._session: aiohttp.ClientSession | None = None
        self._running = False

    #: Webhooks carry events only.
    wants_detections = False

    def check(self, url: str) -> None:
        """``UrlRefused`` (a ``ValueError`` saying why) for a URL no webhook may have."""
        check_url(url, self.policy)

    def publish(self, stream_id: str, event: dict[str, Any], webhooks: Sequence[Any] = ()) -> None:
        """Queue ``event`` for every server target and for ``webhooks`` (the stream's own:
        objects with ``url`` and ``secret``); never blocks."""
        if event.get("type") != "event" or not (self.targets or webhooks):
            return
        body = json.dumps({**event, "stream_id": stream_id}, separators=(",", ":")).encode()
        for target in self.targets:
            target.offer(body)
        for hook in webhooks:
            own = self._stream_target(hook.url, hook.secret)
            if own is not None:
                own.offer(body)

    def _stream_target(self, url: str, secret: str | None) -> _Target | None:
        key = (url, secret)
        target = self.stream_targets.get(key)
        if target is not None:
            return target
        try:
            check_url(url, self.policy)  # checked when set too; the policy is the server's
        except UrlRefused as exc:
            log.warning("a stream's webhook %s is refused: %s", redact(url), exc.detail)
            self._metrics.event_drops.labels(OUTPUT, "refused").inc()
            return None
        if len(self.stream_targets) >= MAX_STREAM_TARGETS:
            self._metrics.event_drops.labels(OUTPUT, "too_many_targets").inc()
            return None
        target = self.stream_targets[key] = _Target(WebhookTarget(url, secret), self.config, self._metrics)
        if self._running:
            target.start(self._connect())
        return target

    def _connect(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=CheckedResolver(self.policy), limit_per_host=4)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        for target in [*self.targets, *self.stream_targets.values()]:
            target.start(self._connect())

    async def close(self) -> None:
        self._running = False
        for target in [*self.targets, *self.stream_targets.values()]:
            await target.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
