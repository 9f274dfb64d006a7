"""``PullSource``: a pulled URL as a stream's source — its thread, its reconnects, the hand-over
of frames to the stream.

::

    event loop                                   source thread (one per source)
    ----------                                   ------------------------------
    _run task: connect ──submit──────────────►   Connection.run(): open, demux, decode, pace
               ◄── opened (call_soon_threadsafe)        │ each frame: _offer()
    Scheduler ──take()──► the stream's mailbox ◄────────┘ Stream.push_threadsafe (newest wins)
               ◄── ConnectionResult (the connection ended)
    ended: file over -> close the stream (or loop); dropped/failed -> backoff, reconnect

The thread never waits for the loop and never queues: each decoded frame goes straight into
the stream's one newest-wins mailbox, the same slot a WebRTC peer's frames go to, and a
frame the model has not taken yet when the next arrives is dropped and counted there (the
stream's ``dropped``: ``GET /sessions``, ``GET /streams``, ``rtc_frames_dropped_total``).
The loop is woken only when a frame finds the mailbox empty. So a busy loop or a slow model
costs frames, never memory or latency.

Reconnecting: a live source that drops or fails is opened again after a backoff delay that
doubles from ``reconnect_min`` up to ``reconnect_max``, with jitter (half the delay is
random) so that many streams from one restarted camera server do not reconnect in
lockstep; a connection that delivered frames for ``healthy_after`` seconds resets it. The
stream (its id, its subscribers, its slot) lives on through reconnects.

Ending: a source with an end (an HTTP file, a VOD playlist, a local file) ends the stream
when it is over ("source ended"), because that is what a clip is — its detections, once —
and a stream that replayed forever would hold a session slot and the CPU unasked. Ask for
``"loop": true`` to replay it (a demo, a test feed). A live source's end is a drop:
reconnect. A URL the policy refuses ends the stream ("url refused") — retrying would not
change the answer, and a source that starts pointing somewhere private deserves no retries.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import av

from ..engine.frames import VideoFrameLike
from ..logs import session_logger
from ..metrics import Metrics
from ..streams.registry import StreamRegistry
from ..streams.stream import Stream
from .limits import InputCaps, InputRefused
from .policy import ResolveError, SourcePolicy, SourceUrl, UrlRefused
from .reader import Connection, ConnectionResult, OpenedInfo, Timeouts, describe, failure_kind, require_protocol
from .spec import PullSpec

log = logging.getLogger(__name__)


#: Seconds ``POST /streams`` waits past the open timeout before it answers "timeout" itself.
OPEN_GRACE = 2.0


class SourceOpenError(RuntimeError):
    """The source could not be opened (when asked to wait for it); ``kind`` as in the metrics."""

    def __init__(self, detail: str, kind: str) -> None:
        super().__init__(detail)
        self.detail, self.kind = detail, kind


@dataclass(frozen=True)
class PullLimits:
    open_timeout: float = 10.0
    read_timeout: float = 10.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: A connection that delivered frames this long resets the backoff.
    healthy_after: float = 10.0
    #: What the source may send: frame size, playlist bytes and segments.
    caps: InputCaps = field(default_factory=InputCaps)


@dataclass(frozen=True)
class PullConfig:
    """What opening a pull stream needs (set by the composition root from ``RTC_SOURCE_*``):
    which URLs may be pulled, and the timeouts and backoff of each source."""

    policy: SourcePolicy = field(default_factory=lambda: SourcePolicy.of(()))
    limits: PullLimits = field(default_factory=PullLimits)


def backoff_delay(attempt: int, low: float, high: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with "equal jitter": half of ``min(high, low * 2**attempt)`` fixed,
    half random."""
    delay = min(high, low * 2 ** min(attempt, 32))
    return delay / 2 + rand() * delay / 2


class PullSource:
    """Feeds ``stream`` from ``url``; see the module's docstring."""

    kind = "pull"

    def __init__(self, stream: Stream, spec: PullSpec, url: SourceUrl, policy: SourcePolicy, limits: PullLimits,
                 metrics: Metrics, *, fail_fast: bool) -> None:
        self.spec = spec
        self.url = url
        self._stream = stream
        self._policy = policy
        self._limits = limits
        self._metrics = metrics
        #: Give up (close the stream) if the very first connection fails: a URL from an API
        #: call gets its answer (422) at once; one from RTC_SOURCES keeps trying.
        self._fail_fast = fail_fast
        self.log = session_logger(log, stream.id)
        self.state = "connecting"
        self.reconnects = 0
        self.frames = 0
        #: Packets of every connection so far that were corrupt (``rtc_pull_corrupt_packets_total``).
        self.corrupt_packets = 0
        self.last_error: str | None = None
        self.info: OpenedInfo | None = None
        self._stop = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pull-{stream.id[:8]}")
        self._connection: Connection | None = None
        self._job: Future[ConnectionResult] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first = asyncio.Event()
        self._first_error: BaseException | None = None

    # ----- lifetime ----------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stream.spawn(self._run(), "puller")

    async def wait_opened(self) -> None:
        """Until the first connection has opened; raises what made it fail instead."""
        await self._first.wait()
        if self._first_error is not None:
            raise self._first_error

    def _first_outcome(self, error: BaseException | None) -> None:
        if not self._first.is_set():
            self._first_error = error
            self._first.set()

    async def stop(self) -> None:
        """End the thread: stop flag, unblock its I/O, wait for it (the stream bounds the wait)."""
        self._stop.set()
        self.state = "stopped"
        self._first_outcome(SourceOpenError("the stream was closed before its source opened", "closed"))
        if self._connection is not None:
            self._connection.abort()
        try:
            if self._job is not None and not self._job.done():
                await asyncio.wrap_future(self._job)
        finally:
            self._executor.shutdown(wait=False)

    # ----- connections -------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            started = time.monotonic()
            result = await self._connect()
            if self._stop.is_set():
                return
            if result.refused is not None:
                self._give_up("url refused", result.refused, "refused")
                return
            if isinstance(result.error, InputRefused):  # over a cap: the same source would be again
                self._metrics.pull_open_failures.labels(result.error.kind).inc()
                reason = "frame too large" if result.opened else "open failed"
                self._give_up(reason, SourceOpenError(describe(result.error), result.error.kind), result.error.kind)
                return
            if not result.opened:
                assert result.error is not None
                kind = failure_kind(result.error)
                self._metrics.pull_open_failures.labels(kind).inc()
                if self._fail_fast and not self._first.is_set():
                    self._give_up("open failed", SourceOpenError(describe(result.error), kind), kind)
                    return
            elif result.ended and result.finite:
                if self.spec.loop and result.frames:
                    self.log.info("source over after %d frames; looping", result.frames)
                    attempt = 0
                    continue
                self.log.info("source over after %d frames", result.frames)
                self.state = "ended"
                self._stream.close_soon("source ended")
                return
            if result.frames and time.monotonic() - started >= self._limits.healthy_after:
                attempt = 0
            delay = backoff_delay(attempt, self._limits.reconnect_min, self._limits.reconnect_max)
            attempt += 1
            self.reconnects += 1
            self._metrics.pull_reconnects.inc()
            why = describe(result.error) if result.error is not None else "the source ended its stream"
            self.last_error = why
            self.state = "reconnecting"
            self.log.warning("source %s: %s; reconnecting in %.1f s (attempt %d)",
                             "failed to open" if not result.opened else "dropped", why, delay, attempt)
            await asyncio.sleep(delay)

    async def _connect(self) -> ConnectionResult:
        self.state = "connecting" if not self.reconnects else "reconnecting"
        limits = self._limits
        connection = Connection(self.url, self._policy, Timeouts(limits.open_timeout, limits.read_timeout),
                                self._stop, self._opened_from_thread, self._offer, caps=limits.caps,
                                on_corrupt=self._corrupt_from_thread)
        self._connection = connection
        context = contextvars.copy_context()  # the thread's log lines carry the stream's id
        self._job = self._executor.submit(context.run, connection.run)
        return await asyncio.wrap_future(self._job)

    def _give_up(self, reason: str, error: BaseException, kind: str) -> None:
        self.state = "failed"
        self.last_error = describe(error)
        if kind == "refused":
            self._metrics.pull_open_failures.labels(kind).inc()
        self.log.error("source %s: %s", reason, self.last_error)
        self._first_outcome(error)
        self._stream.close_soon(reason)

    # ----- thread -> loop ----------------------------------------------------------------------
    def _corrupt_from_thread(self) -> None:
        self.corrupt_packets += 1  # only the source's one thread writes it
        self._metrics.pull_corrupt_packets.inc()

    def _opened_from_thread(self, info: OpenedInfo) -> None:
        self._call_soon(self._opened, info)

    def _opened(self, info: OpenedInfo) -> None:
        self.info = info
        if self.state != "stopped":
            self.state = "playing"
        self.log.info("source open: %s %s %dx%d%s%s", info.format, info.codec, info.width, info.height,
                      "" if info.address is None else f" at {info.address}", ", finite" if info.finite else ", live")
        self._first_outcome(None)

    def _offer(self, frame: av.VideoFrame, pts: int | None) -> None:
        """In the thread: hand ``frame`` to the stream's mailbox, replacing one not taken yet."""
        if self._stream.closed:
            return
        assert self._loop is not None
        self.frames += 1  # written by this thread only; the loop reads it
        # PyAV's stub gives to_ndarray a positional ``channel_last`` and ``format`` as a
        # keyword, which VideoFrameLike (engine) spells as a positional: the same call.
        if not self._stream.push_threadsafe(cast(VideoFrameLike, frame), pts, self._loop):
            self._stop.set()  # the loop is closed: the server is gone, so is the stream

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the server is gone, so is the stream
            self._stop.set()

    # ----- what the API shows -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        info = self.info
        return {
            "url": self.url.redacted, "state": self.state, "loop": self.spec.loop,
            "reconnects": self.reconnects, "frames": self.frames, "corrupt_packets": self.corrupt_packets,
            "last_error": self.last_error,
            "media": None if info is None else {
                "format": info.format, "codec": info.codec, "width": info.width, "height": info.height,
                "live": not info.finite},
        }


async def open_pull_stream(registry: StreamRegistry, config: PullConfig, spec: PullSpec, *,
                           wait: bool = True, stream_id: str | None = None) -> Stream:
    """A new stream fed by ``spec.url``. Checks the URL first (``UrlRefused``; for a host name
    every address it resolves to), then takes a slot (``ServerFull``). With ``wait`` the
    first connection must open (``SourceOpenError``, ``UrlRefused`` for what the source
    itself pointed at — an HLS segment, a redirect); on failure nothing is left. Without
    it (``RTC_SOURCES``, a durable stream restored) the stream keeps trying in the background.
    ``stream_id``: the id a durable stream keeps across restarts and replicas."""
    policy = config.policy
    url = policy.parse(spec.url)
    if url.scheme == "srt":
        try:
            require_protocol("srt")
        except Exception as exc:
            raise SourceOpenError(describe(exc), "protocol_unavailable") from exc
    if url.scheme != "file" and wait:
        try:
            await asyncio.get_running_loop().run_in_executor(None, policy.resolve, url)
        except ResolveError as exc:
            raise SourceOpenError(str(exc), "resolve") from exc
    stream = registry.open("pull", spec.settings(registry.defaults(), registry.class_names), stream_id=stream_id)
    try:
        source = PullSource(stream, spec, url, policy, config.limits, registry.metrics, fail_fast=wait)
        stream.attach(source)
        stream.start()
        source.start()
        stream.log.info("pulling %s (%d active)", url.redacted, len(registry))
        if wait:
            # The reader holds the open deadline itself; this bounds the answer whatever a
            # protocol does (a grace for the connect and the thread's hand-over).
            try:
                async with asyncio.timeout(config.limits.open_timeout + OPEN_GRACE):
                    await source.wait_opened()
            except TimeoutError as exc:
                raise SourceOpenError(f"the source did not open within {config.limits.open_timeout:g} s",
                                      "timeout") from exc
    except BaseException as exc:
        await stream.close("open failed" if not isinstance(exc, UrlRefused) else "url refused")
        raise
    return stream


def start_configured_sources(registry: StreamRegistry, config: PullConfig, specs: Sequence[PullSpec],
                             ) -> Callable[[object], Coroutine[Any, Any, None]]:
    """An app start-up hook opening ``RTC_SOURCES`` (parsed, their models checked, by the
    composition root: the server does not start half-configured); each stream then connects
    in the background and keeps retrying, as a camera may come up after the server."""

    async def start(_app: object) -> None:
        for spec in specs:
            await open_pull_stream(registry, config, spec, wait=False)

    return start
