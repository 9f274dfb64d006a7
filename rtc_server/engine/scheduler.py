"""``Scheduler``: the one door between every requester and the models, one per process.

Every live stream and every ``POST /predict`` image reaches a detector through it. The
words are Triton's (``docs/user_guide/batcher.md``):

- a **lane** is a requester the scheduler *pulls* from: a live stream registers one (the
  ``Lane`` protocol of ``frames.py``; the engine knows no streams), ``/predict`` shares one bounded
  lane of its own;
- a **worker** is one concurrent inference call with its own model instances and its own
  share of intra-op threads (Triton's *instance group*); ``plan_workers`` decides how
  many and how many threads each, so the cores are not oversubscribed;
- **dynamic batching**: one call may take up to ``max_batch`` images of different lanes
  with the same model and frame size, waiting at most ``batch_wait_s`` (Triton's
  ``max_queue_delay``) for a batch to fill;
- the ``/predict`` lane has a **queue policy**: at most ``predict_queue`` requests wait
  (0: none waits, a request runs only if a worker is free for it now); beyond that, and
  after ``predict_max_wait_s`` in the queue, they are *rejected* (``Overloaded``: the
  route answers 503 with ``Retry-After`` at once).

Why pull, not push: a frame queued when it arrives is frozen there while it waits its
turn — with N streams behind one model it is N inferences old when it runs. Here nothing
is queued per frame: when a worker is free, ``_pump`` walks the lanes in round-robin order
from where it stopped, takes the first *ready* one and that lane's **newest** frame at
that moment (``Lane.take``), and hands the result back to the lane (``Lane.deliver``). A
result is therefore about one frame interval plus one inference old whatever the number
of streams; each stream's rate falls as 1/N instead. A lane is ready when it has a frame
not yet taken, nothing of its own in flight, and its ``max_fps`` allows one more now; a
lane that is not ready is skipped, so its spare share goes to the others.

Everything but the inference itself runs on the event loop, so the scheduler's state
needs no locks; the workers are threads of its own executor (onnxruntime releases the GIL).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from .catalog import ModelCatalog
from .detector import DetectionResult, Detector
from .frames import Image, Lane, Request, image_size
from .yolo import Thresholds

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """``/predict`` is at its share: the queue is full, or the request waited too long.
    The client should retry after ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Abandoned(RuntimeError):
    """The requester went away before its image was dispatched; it was not run."""


class SchedulerClosed(RuntimeError):
    """The server is shutting down."""


class SchedulerObserver(Protocol):
    """Where the scheduler reports what it does (the server's Prometheus metrics)."""

    def batch_dispatched(self, size: int, waits_s: Sequence[float]) -> None: ...

    def predict_outcome(self, outcome: str) -> None: ...


# ----- workers and threads ----------------------------------------------------------------
@dataclass(frozen=True)
class WorkerPlan:
    """How many inference calls run at once, and the intra-op threads of each."""

    workers: int
    threads: int


#: On a CPU, one inference call per this many cores (see ``plan_workers``).
CORES_PER_CPU_WORKER = 4
#: Most workers ``plan_workers`` chooses by itself.
MAX_AUTO_WORKERS = 8


def plan_workers(workers: int = 0, threads: int = 0, cores: int | None = None, *,
                 accelerator: bool = False) -> WorkerPlan:
    """The worker count and each worker's intra-op threads, so that together they use the
    cores once (``workers`` / ``threads`` 0: choose).

    CPU: one worker per ``CORES_PER_CPU_WORKER`` cores (at least one: on 2 cores, one call
    with both cores). A small model like YOLO11n stops gaining from intra-op threads after
    a few, while independent calls scale with cores; a worker per 4 cores is a middle
    ground, not measured beyond 2 cores (``python -m bench.scheduler --server-args
    "--workers N"`` measures it) — set ``RTC_WORKERS`` where measurement says otherwise. With an
    accelerator two workers overlap one call's CPU pre/post-processing with the other's
    inference. Threads default to the cores shared out evenly (at least one each).

    The one place that turns settings into per-worker threads: the composition root
    passes ``threads`` on to whatever builds each worker's model instance.
    """
    cores = max(1, cores if cores is not None else (os.cpu_count() or 1))
    if workers <= 0:
        workers = 2 if accelerator else min(MAX_AUTO_WORKERS, max(1, cores // CORES_PER_CPU_WORKER))
    if threads <= 0:
        threads = max(1, cores // workers)
    return WorkerPlan(workers=workers, threads=threads)


def on_accelerator(models: ModelCatalog) -> bool:
    """True when every model's first (preferred) provider is not a CPU one (a GPU provider)."""
    return all(bool(d.info.providers) and "CPU" not in d.info.providers[0].upper() for d in models)


@dataclass(frozen=True)
class SchedulerConfig:
    #: Concurrent inference calls (Triton's instance count).
    workers: int = 1
    #: Images of different lanes in one call at most (1: no batching).
    max_batch: int = 1
    #: How long a ready image may wait for a batch to fill (Triton's max_queue_delay).
    batch_wait_s: float = 0.0
    #: ``/predict`` requests that may wait for a worker; the next is rejected at once.
    #: 0: none may wait (admitted only when a worker is free for it now).
    predict_queue: int = 4
    #: A ``/predict`` request still waiting after this long is rejected.
    predict_max_wait_s: float = 1.5
    #: What ``Overloaded.retry_after`` says (whole seconds: HTTP's ``Retry-After``).
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_batch < 1 or self.predict_queue < 0:
            raise ValueError("workers and max_batch must be >= 1, predict_queue >= 0")
        if self.batch_wait_s < 0 or self.predict_max_wait_s <= 0 or self.retry_after_s < 1:
            raise ValueError("batch_wait_s >= 0, predict_max_wait_s > 0 and retry_after_s >= 1")


# ----- accounting --------------------------------------------------------------------------
class BusyMeter:
    """Worker-seconds spent in inference calls: in total, and as a share of a recent window."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.window_s = window_s
        self.total_s = 0.0
        self._clock = clock
        self._since = clock()
        self._done: deque[tuple[float, float]] = deque()
        self._running: dict[int, float] = {}

    def start(self, worker: int, t: float) -> None:
        self._running[worker] = t

    def seconds(self, now: float | None = None) -> float:
        """Busy worker-seconds so far, the calls still running included up to ``now``:
        monotonic, so a counter; exact at any instant (no whole-call jumps at the end)."""
        now = self._clock() if now is None else now
        return self.total_s + sum(now - start for start in self._running.values())

    def stop(self, worker: int, t: float) -> float:
        started = self._running.pop(worker)
        self._done.append((started, t))
        self.total_s += t - started
        while self._done and self._done[0][1] < t - self.window_s:
            self._done.popleft()
        return t - started

    def ratio(self, workers: int, now: float | None = None) -> float:
        """Busy share of ``workers`` over the last ``window_s`` (or since start), 0..1."""
        now = self._clock() if now is None else now
        low = now - self.window_s
        busy = sum(end - max(start, low) for start, end in self._done if end > low)
        busy += sum(now - max(start, low) for start in self._running.values())
        span = min(self.window_s, now - self._since)
        return min(1.0, busy / (workers * span)) if span > 0 else 0.0


@dataclass(eq=False)
class _LaneState:
    lane: Lane
    #: At most this many of the lane's requests in flight (1 for streams: in order, fair).
    cap: int = 1
    in_flight: int = 0
    last_taken: float = -math.inf
    #: When the lane first had something pending since its last take. A stream's newer
    #: frames replace its pending one but do not make the lane any less long ready: a
    #: batch wait counts from here, or a stream at 30 fps would restart it forever.
    pending_since: float | None = None
    registered_at: float = field(default_factory=time.perf_counter)
    delivered: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def due(self, request: Request) -> float:
        """When this lane became (or becomes) ready: pending, and its ``max_fps`` permitting."""
        since = request.arrived_at if self.pending_since is None else min(self.pending_since, request.arrived_at)
        self.pending_since = since
        fps = self.lane.max_fps
        return max(since, self.last_taken + 1.0 / fps) if fps else since

    def taken(self, now: float) -> None:
        self.in_flight += 1
        self.last_taken = now
        self.pending_since = None

    def rate(self, now: float, window_s: float) -> float:
        low = now - window_s
        count = sum(1 for t in self.delivered if t > low)
        span = min(window_s, now - self.registered_at)
        return count / span if span > 0 else 0.0


# ----- /predict: one lane with a bounded queue ------------------------------------------------
@dataclass(eq=False)
class _PredictItem:
    request: Request
    future: asyncio.Future[DetectionResult]
    wanted: Callable[[], bool] | None
    expiry: asyncio.TimerHandle | None = None


class _PredictLane:
    """``/predict``'s share: one lane like a stream's, fed from a FIFO of bounded length.

    Requests whose caller has gone (``wanted()`` false, or its task cancelled) are dropped
    when they reach the head, never run.
    """

    name = "predict"
    model = None
    max_fps = None

    def __init__(self, on_outcome: Callable[[str], None]) -> None:
        self.queue: deque[_PredictItem] = deque()
        self._on_outcome = on_outcome

    def peek(self) -> Request | None:
        while self.queue:
            item = self.queue[0]
            if item.future.done():  # cancelled by its caller, or expired
                self.queue.popleft()
                continue
            if item.wanted is not None and not item.wanted():
                self.queue.popleft()
                self._settle(item, exc=Abandoned("the client went away before its image was run"))
                self._on_outcome("abandoned")
                continue
            return item.request
        return None

    def take(self) -> Request | None:
        if self.peek() is None:
            return None
        item = self.queue.popleft()
        if item.expiry is not None:
            item.expiry.cancel()
        return replace(item.request, tag=item)

    def deliver(self, request: Request, result: DetectionResult) -> None:
        self._settle(request.tag, result=result)

    def fail(self, request: Request, exc: Exception) -> None:
        self._settle(request.tag, exc=exc)

    @staticmethod
    def _settle(item: _PredictItem, result: DetectionResult | None = None, exc: BaseException | None = None) -> None:
        if item.expiry is not None:
            item.expiry.cancel()
        if item.future.done():
            return
        if exc is not None:
            item.future.set_exception(exc)
        else:
            assert result is not None
            item.future.set_result(result)


# ----- the scheduler ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Batch:
    model: str | None
    items: list[tuple[_LaneState, Request]]


class Scheduler:
    def __init__(self, models: ModelCatalog, config: SchedulerConfig | None = None, *,
                 instances: Sequence[ModelCatalog] = (), observer: SchedulerObserver | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """``models``: the catalog (worker 0's instances). ``instances``: one catalog per
        worker with that worker's own model instances; workers without one share ``models``
        (detectors are thread-safe, so that is correct, only less parallel).

        ``clock``: the scheduler's time in seconds (``max_fps`` pacing, batch waits, load),
        on the same scale as the ``arrived_at`` stamps lanes hand over (``perf_counter``).
        A test passes one it moves forward itself, so pacing is checked without waiting."""
        self._clock = clock
        self.models = models
        self.config = config or SchedulerConfig()
        workers = self.config.workers
        self._instances = [*instances[:workers], *[models] * (workers - len(instances[:workers]))]
        self.observer = observer
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
        self._ready = threading.Event()
        self._free = list(range(workers - 1, -1, -1))
        self._lanes: list[_LaneState] = []
        self._states: dict[int, _LaneState] = {}
        self._cursor = 0
        self._predict = _PredictLane(self._predict_outcome)
        self._predict_state = _LaneState(self._predict, cap=workers, registered_at=clock())
        self._states[id(self._predict)] = self._predict_state
        self._lanes.append(self._predict_state)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._closed = False
        self.busy = BusyMeter(clock=clock)

    # ----- the seam the server uses ---------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once every model instance has run once (warm): what ``/readyz`` reports."""
        return self._ready.is_set()

    @property
    def workers(self) -> int:
        return self.config.workers

    async def warmup(self) -> None:
        loop = asyncio.get_running_loop()
        seen: set[int] = set()
        for name in self.models.names:  # model by model: /readyz shows each one's readiness
            for catalog in self._instances:
                detector = catalog.get(name)
                if id(detector) in seen:
                    continue
                seen.add(id(detector))
                await loop.run_in_executor(self._executor, detector.warmup)
            self.models.mark_ready(name)
            log.info("model %s warmed up (%s)", name, ", ".join(self.models.info(name).providers))
        self._ready.set()

    def close(self) -> None:
        """Stop dispatching, refuse what waits, and wait for the calls in flight. Blocks
        until they end: for callers off the event loop; on the loop, ``await aclose()``."""
        self._stop()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def aclose(self, timeout: float = 10.0) -> bool:
        """``close`` without blocking the event loop (issue 20): the calls in flight are
        waited for in a thread of its own, at most ``timeout`` s, while the loop goes on
        serving (probes, the last answers). True if every worker ended in time; False
        leaves the rest to end on their own (logged), the process exit still joins them."""
        self._stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not ended.done():
                ended.set_result(None)

        def join() -> None:  # a daemon thread: a stuck worker must not also hold this one
            self._executor.shutdown(wait=True)
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        threading.Thread(target=join, name="inference-join", daemon=True).start()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(ended)
        except TimeoutError:
            log.warning("inference calls still running %.0f s after shutdown began; not waiting for them", timeout)
            return False
        return True

    def _stop(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        while self._predict.queue:
            self._predict._settle(self._predict.queue.popleft(), exc=SchedulerClosed("the server is shutting down"))

    # ----- streams ----------------------------------------------------------------------------
    def register(self, lane: Lane) -> None:
        """Serve ``lane`` from now on (last in the round-robin order)."""
        if id(lane) not in self._states:
            self._register(lane)

    def unregister(self, lane: Lane) -> None:
        """Forget ``lane``; a result still in flight for it is dropped, not delivered."""
        state = self._states.pop(id(lane), None)
        if state is None:
            return
        index = self._lanes.index(state)
        self._lanes.pop(index)
        if index < self._cursor:
            self._cursor -= 1
        if self._lanes:
            self._cursor %= len(self._lanes)
        self._share_out()

    def notify(self) -> None:
        """A lane has something new: dispatch now if a worker is free (cheap otherwise)."""
        self._pump()

    def _register(self, lane: Lane) -> None:
        state = _LaneState(lane, registered_at=self._clock())
        self._states[id(lane)] = state
        self._lanes.append(state)
        self._share_out()

    def _share_out(self) -> None:
        """``/predict``'s fair share of the workers: all of them while no stream is live,
        else its part as one lane among ``streams + 1`` (at least one worker)."""
        streams = len(self._lanes) - 1
        workers = self.workers
        self._predict_state.cap = workers if streams == 0 else max(1, math.ceil(workers / (streams + 1)))

    # ----- /predict -------------------------------------------------------------------------
    def check_predict_room(self) -> None:
        """Raise ``Overloaded`` (and count it) if the ``/predict`` queue is full now; the
        route asks before reading a body, ``detect`` asks again when it queues.

        ``predict_queue`` 0 means no waiting line: a request is admitted only when it can
        run now (nothing queued, a free worker, ``/predict`` under its share), else refused."""
        queued = len(self._predict.queue)
        if self.config.predict_queue == 0:
            state = self._predict_state
            full = queued > 0 or not self._free or state.in_flight >= state.cap
        else:
            full = queued >= self.config.predict_queue
        if full:
            self._predict_outcome("overloaded")
            what = (f"{queued} /predict requests are already waiting for the model" if queued
                    else "every worker /predict may use is busy")
            raise Overloaded(f"{what} (RTC_PREDICT_QUEUE={self.config.predict_queue}); retry shortly",
                             self.config.retry_after_s)

    async def detect(self, image: Image, thresholds: Thresholds, model: str | None = None, *,
                     wanted: Callable[[], bool] | None = None) -> DetectionResult:
        """Detect in one image through ``/predict``'s lane, admitted or refused at once.

        Raises ``Overloaded`` when the queue is full (at once) or the request waited longer
        than ``predict_max_wait_s``; ``Abandoned`` when ``wanted()`` said False at dispatch
        (the caller's client is gone: the image is not run); ``UnknownModel`` for a name
        the catalog does not have.
        """
        if self._closed:
            raise SchedulerClosed("the server is shutting down")
        self.models.get(model)  # UnknownModel before anything is queued
        config = self.config
        self.check_predict_room()
        loop = asyncio.get_running_loop()
        item = _PredictItem(Request(image, thresholds, model, self._clock()), loop.create_future(), wanted)
        item.expiry = loop.call_later(config.predict_max_wait_s, self._expire, item)
        self._predict.queue.append(item)
        self._pump()
        try:
            result = await item.future
        except (Overloaded, Abandoned, SchedulerClosed):
            raise  # counted where they happened
        except asyncio.CancelledError:
            # Our caller was cancelled (a server with handler cancellation on: the client
            # hung up). If it was still waiting, leave the queue: it will not be run.
            if item in self._predict.queue:
                self._predict.queue.remove(item)
                self._predict_outcome("abandoned")
            raise
        except Exception:
            self._predict_outcome("failed")
            raise
        finally:
            if item.expiry is not None:
                item.expiry.cancel()
        self._predict_outcome("ok")
        return result

    def _expire(self, item: _PredictItem) -> None:
        if item in self._predict.queue:
            self._predict.queue.remove(item)
            self._predict_outcome("timeout")
            self._predict._settle(item, exc=Overloaded(
                f"waited {self.config.predict_max_wait_s:g} s for the model (RTC_PREDICT_MAX_WAIT) behind "
                "the live streams and other /predict requests; retry shortly", self.config.retry_after_s))

    def _predict_outcome(self, outcome: str) -> None:
        if self.observer is not None:
            self.observer.predict_outcome(outcome)

    # ----- load, for /readyz and /metrics --------------------------------------------------------
    def busy_ratio(self) -> float:
        """Share of the workers' time spent in inference calls over the last 10 s."""
        return self.busy.ratio(self.workers)

    def busy_seconds(self) -> float:
        """Worker-seconds spent in inference calls since start (running calls included)."""
        return self.busy.seconds()

    def lane_rates(self, window_s: float = 10.0) -> dict[str, float]:
        """Detections per second delivered to each lane over the last ``window_s``."""
        now = self._clock()
        return {s.lane.name: s.rate(now, window_s) for s in self._lanes}

    def load(self) -> dict[str, Any]:
        """What the scheduler is doing now; ``/readyz`` shows it."""
        streams = [s for s in self._lanes if s is not self._predict_state]
        waiting = sum(1 for s in streams if s.in_flight == 0 and s.lane.peek() is not None)
        return {
            "workers": self.workers,
            "busy": round(self.busy_ratio(), 3),
            "in_flight": self.workers - len(self._free),
            "streams": len(streams),
            "streams_waiting": waiting,
            "max_batch": self.config.max_batch,
            "predict_queue": len(self._predict.queue),
            "predict_queue_max": self.config.predict_queue,
        }

    # ----- dispatch -------------------------------------------------------------------------------
    def _pump(self) -> None:
        """While a worker is free and some lane is ready, dispatch its newest image."""
        if self._closed:
            return
        while self._free:
            now = self._clock()
            batch, wake_at = self._next_batch(now)
            if batch is None:
                self._wake_at(wake_at)
                return
            self._dispatch(batch, now)

    def _wake_at(self, when: float) -> None:
        """Pump again at ``when`` (a lane's ``max_fps`` or the batch wait ends then)."""
        if when == math.inf or (self._timer is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_later(max(0.0, when - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        self._pump()

    def _next_batch(self, now: float) -> tuple[_Batch | None, float]:
        """The next lane in round-robin order that is ready, with up to ``max_batch - 1``
        more ready lanes of the same model and frame size; else when to look again."""
        lanes = self._lanes
        count = len(lanes)
        wake_at = math.inf
        first: tuple[int, _LaneState, Request, float] | None = None
        for step in range(count):
            index = (self._cursor + step) % count
            state = lanes[index]
            if state.in_flight >= state.cap:
                continue
            request = state.lane.peek()
            if request is None:
                continue
            due = state.due(request)
            if due > now:
                wake_at = min(wake_at, due)
                continue
            first = (index, state, request, due)
            break
        if first is None:
            return None, wake_at
        index, state, request, due = first
        model = request.model or self.models.default
        items = [(state, request)]
        max_batch = self.config.max_batch
        if max_batch > 1:
            size = image_size(request.image)
            for step in range(1, count):
                if len(items) >= max_batch:
                    break
                other = lanes[(index + step) % count]
                if other.in_flight >= other.cap:
                    continue
                candidate = other.lane.peek()
                if (candidate is None or other.due(candidate) > now
                        or (candidate.model or self.models.default) != model or image_size(candidate.image) != size):
                    continue
                items.append((other, candidate))
            wait_until = due + self.config.batch_wait_s
            if len(items) < max_batch and now < wait_until and self._could_join(model, len(items)):
                return None, min(wake_at, wait_until)
        self._cursor = (index + 1) % count
        return _Batch(request.model, items), wake_at

    def _could_join(self, model: str, have: int) -> bool:
        """Whether waiting could fill the batch more: other stream lanes of this model."""
        default = self.models.default
        return sum(1 for s in self._lanes if s is not self._predict_state
                   and (s.lane.model or default) == model) > have

    def _dispatch(self, batch: _Batch, now: float) -> None:
        worker = self._free.pop()
        taken: list[tuple[_LaneState, Request]] = []
        waits: list[float] = []
        for state, peeked in batch.items:
            request = state.lane.take()
            if request is None:  # cannot happen on one thread; be safe rather than stuck
                continue
            waits.append(max(0.0, now - state.due(peeked)))  # ready -> dispatched
            state.taken(now)
            taken.append((state, request))
        if not taken:
            self._free.append(worker)
            return
        if self.observer is not None:
            self.observer.batch_dispatched(len(taken), waits)
        self.busy.start(worker, now)
        catalog = self._instances[worker]
        requests = [r for _, r in taken]
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, _run, catalog.get(batch.model), requests)
        future.add_done_callback(lambda f: self._finished(worker, taken, f))

    def _finished(self, worker: int, taken: list[tuple[_LaneState, Request]],
                  future: asyncio.Future[list[DetectionResult | Exception]]) -> None:
        now = self._clock()
        self.busy.stop(worker, now)
        self._free.append(worker)
        try:
            outcomes: list[DetectionResult | Exception] = future.result()
        except BaseException as exc:  # the executor was shut down (cancelled), or _run itself broke
            error = exc if isinstance(exc, Exception) else SchedulerClosed("the server is shutting down")
            outcomes = [error] * len(taken)
        for (state, request), outcome in zip(taken, outcomes, strict=True):
            state.in_flight -= 1
            if self._states.get(id(state.lane)) is not state:
                continue  # unregistered while in flight: nobody to tell
            try:
                if isinstance(outcome, Exception):
                    state.lane.fail(request, outcome)
                else:
                    state.delivered.append(now)
                    state.lane.deliver(request, outcome)
            except Exception:
                log.exception("lane %s failed to take its result", state.lane.name)
        self._pump()


def _run(detector: Detector, requests: Sequence[Request]) -> list[DetectionResult | Exception]:
    """One inference call, on a worker thread: decode each image, detect them all at once.

    A request whose image cannot be converted fails alone. If the detector fails on a batch
    of several, each image is retried alone so that one bad image fails only itself.
    """
    outcomes: list[DetectionResult | Exception] = [RuntimeError("not run")] * len(requests)
    arrays: list[np.ndarray] = []
    good: list[int] = []
    started: list[float] = []
    convert_ms: list[float] = []
    for i, request in enumerate(requests):
        t0 = time.perf_counter()
        try:
            image = request.image
            arrays.append(image if isinstance(image, np.ndarray) else image.to_ndarray(format="rgb24"))
        except Exception as exc:
            outcomes[i] = exc
            continue
        good.append(i)
        started.append(t0)
        convert_ms.append((time.perf_counter() - t0) * 1000)
    if not good:
        return outcomes
    thresholds = [requests[i].thresholds for i in good]
    try:
        results: Iterable[DetectionResult | Exception] = detector.detect(arrays, thresholds)
    except Exception as exc:
        if len(good) == 1:
            results = [exc]
        else:
            results = [_detect_alone(detector, array, th) for array, th in zip(arrays, thresholds, strict=True)]
    for i, t0, ms, result in zip(good, started, convert_ms, results, strict=True):
        # The YUV -> RGB (or JPEG) conversion is preprocessing too; report it there, honestly.
        outcomes[i] = result if isinstance(result, Exception) else replace(
            result, started_at=t0, preprocess_ms=result.preprocess_ms + ms)
    return outcomes


def _detect_alone(detector: Detector, array: np.ndarray, thresholds: Thresholds) -> DetectionResult | Exception:
    try:
        (result,) = detector.detect([array], [thresholds])
        return result
    except Exception as exc:
        return exc
