"""``StreamRegistry``: the server's only stream state — which streams are live.

A source asks it for a new stream (``open``), which reserves a slot under
``max_sessions`` before anything costly is built; a stream removes itself on close.
Shutdown first drains (``drain``: no new streams, live ones may end on their own for a
while), then closes every stream left through the same ``Stream.close`` path. Whatever the source
(``/offer``, ``/whip``, a pulled URL), every live stream counts against the same cap.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterator

from ..engine.scheduler import Scheduler
from ..engine.yolo import Thresholds
from ..metrics import Metrics
from .control import StreamSettings
from .stream import EventSink, Stream, StreamLimits, check_outputs

log = logging.getLogger(__name__)

#: Seconds a client told "server full" is asked to wait before trying again.
SERVER_FULL_RETRY_AFTER = 5


#: Seconds after a stream closes before the garbage collection it asks for (one per interval).
COLLECT_DELAY = 1.0


def freeze_long_lived() -> None:
    """Collect once, then move every object alive now to the permanent generation
    (``gc.freeze``), so later full collections — ``StreamRegistry``'s after a stream closes —
    do not walk the server's long-lived objects each time. Called once by the composition
    root at start-up, before the server listens. Reference counting still frees frozen
    objects; only cycles among them would stay, and these objects live as long as the process."""
    gc.collect()
    gc.freeze()


class ServerFull(RuntimeError):
    """``max_sessions`` streams are live; the client should retry after ``retry_after`` s."""

    def __init__(self, limit: int, retry_after: int = SERVER_FULL_RETRY_AFTER) -> None:
        super().__init__(f"the server is full ({limit} sessions); retry in {retry_after} s")
        self.retry_after = retry_after


class Draining(ServerFull):
    """The server is shutting down and takes no new streams; a retry reaches another instance.

    A ``ServerFull`` so that every source that already refuses a full server (503 +
    Retry-After) refuses a draining one too."""

    def __init__(self, retry_after: int = SERVER_FULL_RETRY_AFTER) -> None:
        RuntimeError.__init__(self, "the server is shutting down and takes no new sessions; retry (another "
                              "instance will answer)")
        self.retry_after = retry_after


class StreamRegistry:
    """Every live stream, under one cap. Everything it hands a new stream — the scheduler,
    the metrics, the defaults and limits — is built by the composition root and handed in."""

    def __init__(self, scheduler: Scheduler, metrics: Metrics, *, max_sessions: int = 16,
                 defaults: StreamSettings | None = None, limits: StreamLimits | None = None,
                 events: EventSink | None = None) -> None:
        self._scheduler = scheduler
        self.metrics = metrics
        #: Live streams at most (0: no cap); whatever the source, every stream counts.
        self.max_sessions = max_sessions
        self._defaults = defaults or StreamSettings(Thresholds())
        self._limits = limits or StreamLimits()
        #: Where every stream's events go beyond its sinks (webhooks, MQTT), if anywhere.
        self.events = events
        self._streams: dict[str, Stream] = {}
        self._collect_pending = False
        self._draining = False
        self._emptied: asyncio.Event | None = None
        #: Called with each stream that has closed (after it left the registry); the root
        #: adds one that forgets a durable stream which ended by itself.
        self.closed_listeners: list[Callable[[Stream], None]] = []
        #: Called with each new stream (the root's live directory of sessions, issue 22).
        self.opened_listeners: list[Callable[[Stream], None]] = []

    def __len__(self) -> int:
        return len(self._streams)

    def __iter__(self) -> Iterator[Stream]:
        return iter(list(self._streams.values()))

    def get(self, stream_id: str) -> Stream | None:
        return self._streams.get(stream_id)

    def defaults(self) -> StreamSettings:
        """The settings a new stream starts with: the server's thresholds, the default model."""
        return self._defaults

    def check_settings(self, settings: StreamSettings) -> StreamSettings:
        """``settings`` if the event outputs accept the webhooks they name; else
        ``ControlError`` saying why (the SSRF rules, or no webhooks on this server)."""
        check_outputs(settings, self.events)
        return settings

    def class_names(self, model: str | None = None) -> tuple[str, ...]:
        """The class names of a model of the catalog (None: the default one): what the
        ``classes`` of zones and lines may name."""
        return self._scheduler.models.info(model).class_names

    def open(self, source_kind: str, stream_settings: StreamSettings | None = None,
             stream_id: str | None = None) -> Stream:
        """A new stream, holding a slot until it closes; ``stream_settings`` (e.g. the model
        and ``max_fps`` an offer named, the model checked against the catalog by the caller)
        or ``defaults()``. The server's ``max_fps``, if set, caps what the stream asks for.

        ``max_fps``: the detection rate the client asked for (None: as many as its share
        gives); the server's ``max_fps``, if set, caps it. Raises ``ServerFull`` at ``max_sessions``; a closing stream
        frees its slot the moment it leaves the registry.

        ``stream_id``: the id a durable stream had before (a restart, a failover); None: a new
        one. ``ValueError`` if a live stream has it.
        """
        if stream_id is not None and stream_id in self._streams:
            raise ValueError(f"a stream with id {stream_id} is live")
        if self._draining:
            raise Draining()
        cap = self.max_sessions
        if cap and len(self._streams) >= cap:
            raise ServerFull(cap)
        stream = Stream(
            self._scheduler,
            stream_settings or self.defaults(),
            self.metrics,
            source_kind=source_kind,
            on_closed=self._forget,
            limits=self._limits,
            stream_id=stream_id,
            events=self.events,
        )
        self._streams[stream.id] = stream
        self.metrics.sessions_total.inc()
        for listener in list(self.opened_listeners):
            try:
                listener(stream)
            except Exception:
                log.exception("an opened-stream listener failed")
        return stream

    def _forget(self, stream: Stream) -> None:
        self._streams.pop(stream.id, None)
        for listener in list(self.closed_listeners):
            try:
                listener(stream)
            except Exception:
                log.exception("a closed-stream listener failed")
        if not self._streams and self._emptied is not None:
            self._emptied.set()
        self._collect_soon()

    @property
    def full(self) -> bool:
        """Every slot is taken: a new stream would be refused (readiness says so)."""
        cap = self.max_sessions
        return bool(cap) and len(self._streams) >= cap

    @property
    def draining(self) -> bool:
        return self._draining

    async def drain(self, timeout: float) -> int:
        """Take no new streams from now on and wait up to ``timeout`` s for the live ones to
        end on their own; returns how many are still live (``close_all`` ends them)."""
        self._draining = True
        if self._streams and timeout > 0:
            log.info("draining: %d live sessions may go on for up to %.0f s", len(self._streams), timeout)
            self._emptied = asyncio.Event()
            try:
                async with asyncio.timeout(timeout):
                    await self._emptied.wait()
            except TimeoutError:
                pass
        if self._streams:
            log.info("drained: %d sessions still live; closing them", len(self._streams))
        return len(self._streams)

    def _collect_soon(self) -> None:
        """Run a full garbage collection shortly after streams end (at most once a second).

        Why: a closed aiortc peer connection leaves reference cycles that hold its native
        VP8 decoder — and the decoder's libvpx threads — until the cyclic collector's next
        full pass, which may not come for a long time. Measured: without this, a server
        process gained ~0.7 native threads per session over 20 sessions, all released by one
        ``gc.collect()``. One pass per second of churn bounds that at no per-frame cost.

        The pass runs on the event loop, and a full pass walks every tracked object: with
        the model, aiohttp, aiortc and numpy loaded that was 50-65 ms per pass (issue 20),
        a loop stall once a second during churn. A thread would not help (the collector
        holds the GIL throughout), and a young-generation pass would miss the peers' cycles
        (they live long enough to reach the oldest generation). So the composition root
        calls ``freeze_long_lived`` once at start-up: everything alive then (modules, the
        models, the app) moves to the permanent generation, and each pass walks only what
        was made since — the live and just-closed sessions (docs/benchmarks.md, "gc").
        """
        if self._collect_pending:
            return
        self._collect_pending = True

        def collect() -> None:
            self._collect_pending = False
            started = time.perf_counter()
            freed = gc.collect()
            log.debug("gc after stream close: %d objects in %.1f ms", freed, (time.perf_counter() - started) * 1e3)

        asyncio.get_running_loop().call_later(COLLECT_DELAY, collect)

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close() for s in list(self._streams.values())), return_exceptions=True)
