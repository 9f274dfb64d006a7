"""Prometheus metrics for one server (one registry per app, so tests can run several).

Names follow Prometheus conventions: ``rtc_`` prefix, ``_total`` counters, ``_seconds``
histograms. Sessions report into this object; nothing here reaches into sessions except
the live gauges (``count_sessions``, ``count_subscribers``), which read what the composition root hands them (the
registry's size, the subscriptions being served) when scraped. The root also makes this
object the scheduler's observer; it does not do so itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .engine.detector import DetectionResult, ModelInfo
from .engine.scheduler import Scheduler

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _ReleaseCollector(Collector):
    """Reads the receive path's process-wide release counts at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "rtc_video_frames_released", "Video frames the jitter buffer released, by rule "
            "(marker: on the RTP marker bit; stock: aiortc's next-frame rule; keyframe_resync: a "
            "keyframe released past a lost packet; padding_skipped counts padding packets)", labels=["rule"])
        for rule, value in sorted(self._counts().items()):
            family.add_metric([rule], value)
        yield family


class _LaneRateCollector(Collector):
    """Each scheduler lane's processed rate (streams by id, and ``predict``), read at scrape
    time: one series per live stream, gone with the stream."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("rtc_stream_processed_per_second",
                                   "Detections per second delivered to each stream over the last 10 s "
                                   "(lane=predict: /predict requests)", labels=["lane"])
        for lane, rate in sorted(self._scheduler.lane_rates().items()):
            family.add_metric([lane], rate)
        yield family


class _BusyCollector(Collector):
    """The scheduler's busy worker-seconds, read at scrape time so that a call still running
    counts up to now: ``rate()`` over any window is then exact, not lumpy by whole calls."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("rtc_scheduler_busy_seconds", "Worker-seconds spent in inference calls "
                                     "(rate / rtc_scheduler_workers = busy ratio)")
        family.add_metric([], self._scheduler.busy_seconds())
        yield family


class Metrics:
    """The server's Prometheus metrics; also a ``SchedulerObserver`` (the root sets it as
    the scheduler's ``observer``)."""

    def __init__(self, models: Iterable[ModelInfo], release_counts: Callable[[], Mapping[str, int]] | None = None,
                 scheduler: Scheduler | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        if release_counts is not None:
            r.register(_ReleaseCollector(release_counts))
        # ----- scheduler (issue 12) -----
        self.batch_size = Histogram("rtc_batch_size", "Images per inference call", buckets=BATCH_BUCKETS, registry=r)
        self.dispatch_wait = Histogram("rtc_dispatch_wait_seconds", "Image ready (received, and its stream's "
                                       "max_fps allowing) -> dispatched to a worker", buckets=STAGE_BUCKETS,
                                       registry=r)
        self.predict_requests = Counter("rtc_predict_requests_total", "/predict requests through the scheduler, "
                                        "by outcome (ok, overloaded, timeout, abandoned, failed)", ["outcome"],
                                        registry=r)
        if scheduler is not None:
            Gauge("rtc_scheduler_workers", "Concurrent inference calls (RTC_WORKERS)",
                  registry=r).set_function(lambda: scheduler.workers)
            Gauge("rtc_scheduler_busy_ratio", "Share of the workers' time in inference calls, last 10 s",
                  registry=r).set_function(scheduler.busy_ratio)
            r.register(_LaneRateCollector(scheduler))
            r.register(_BusyCollector(scheduler))
        self.sessions_total = Counter("rtc_sessions_total", "Peer sessions created", registry=r)
        self.frames_received = Counter("rtc_frames_received_total", "Video frames decoded and received", registry=r)
        self.frames_processed = Counter("rtc_frames_processed_total", "Frames run through the detector", registry=r)
        self.frames_dropped = Counter("rtc_frames_dropped_total",
                                      "Frames replaced by a newer one before processing", registry=r)
        self.errors = Counter("rtc_errors_total", "Errors by kind", ["kind"], registry=r)
        self.sessions_closed = Counter("rtc_sessions_closed_total", "Peer sessions ended, by why they ended",
                                       ["reason"], registry=r)
        self.stage_seconds = Histogram("rtc_stage_seconds", "Per-frame time by pipeline stage", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=r)
        info = Gauge("rtc_model_info", "The loaded models (value is always 1)",
                     ["name", "version", "sha256", "backend", "precision"], registry=r)
        for model in models:
            info.labels(model.name, model.version, model.sha256[:12], model.backend, model.precision).set(1)
        # ----- pull sources (issue 13) -----
        self.pull_reconnects = Counter("rtc_pull_reconnects_total",
                                       "Pull sources reconnecting after their source dropped or failed", registry=r)
        self.pull_open_failures = Counter(
            "rtc_pull_open_failures_total", "Pull source connections that failed to open, by kind (refused: "
            "the SSRF policy; too_large: over a frame or playlist cap; resolve, connection, timeout, tls, "
            "http_status, not_found, no_video, invalid_data, protocol_unavailable, other)", ["kind"], registry=r)
        self.pull_corrupt_packets = Counter(
            "rtc_pull_corrupt_packets_total", "Packets of pull sources that were corrupt (flagged by the demuxer "
            "or refused by the decoder) and skipped", registry=r)
        self.sink_skipped = Counter("rtc_sink_messages_skipped_total",
                                    "Detection messages a sink skipped instead of queueing (e.g. a congested "
                                    "data channel)", ["sink"], registry=r)
        # ----- consumers (issue 13) -----
        self.subscriber_lost = Counter("rtc_subscriber_messages_lost", "Messages dropped (oldest first) for "
                                       "SSE/WebSocket subscribers that read slower than detections are made",
                                       ["kind"], registry=r)
        # ----- events and their outputs (issue 21) -----
        self.events = Counter("rtc_events_total", "Line and zone events the streams' analytics made, by event",
                              ["event"], registry=r)
        self.event_deliveries = Counter("rtc_event_deliveries_total", "Events an output delivered (a webhook "
                                        "receiver answered 2xx; an MQTT broker acknowledged)", ["output"], registry=r)
        self.event_retries = Counter("rtc_event_delivery_retries_total", "Delivery attempts an output retried",
                                     ["output"], registry=r)
        self.event_drops = Counter("rtc_event_drops_total", "Events an output dropped: queue_full (the oldest, "
                                   "when a target's queue is full), failed (retries exhausted), rejected (a 4xx), "
                                   "refused (an address the SSRF rules refuse), too_many_targets (beyond the "
                                   "receivers streams may name)", ["output", "reason"], registry=r)
        # ----- the event history (issue 22) -----
        self.history_written = Counter("rtc_events_history_written_total", "Events written to the event history "
                                       "(the store's events table, in batches)", registry=r)
        self.history_dropped = Counter("rtc_events_history_dropped_total", "Events the history did not keep: "
                                       "queue_full (the oldest, when the writer's queue is full), write_failed "
                                       "(the store did not take the batch: the database away)", ["reason"],
                                       registry=r)
        for reason in ("queue_full", "write_failed"):  # both series from the start, at 0
            self.history_dropped.labels(reason)

    def count_sessions(self, live: Callable[[], int]) -> None:
        """``rtc_sessions_active``: ``live()`` (the registry's size) read at scrape time."""
        Gauge("rtc_sessions_active", "Peer sessions currently live", registry=self.registry).set_function(live)

    def count_subscribers(self, live: Callable[[], int]) -> None:
        """``rtc_subscribers_active``: ``live()`` (subscriptions being served) read at scrape time."""
        Gauge("rtc_subscribers_active", "SSE and WebSocket subscriptions being served",
              registry=self.registry).set_function(live)

    def count_error(self, kind: str) -> None:
        """``rtc_errors_total{kind}``: ``http_<error>`` from the HTTP layer, ``session_<what>``
        from sessions (bad control messages, rate limiting, timeouts, failed frames)."""
        self.errors.labels(kind).inc()

    def count_skipped(self, sink: str) -> None:
        self.sink_skipped.labels(sink).inc()

    def observe(self, result: DetectionResult, queue_s: float, server_s: float) -> None:
        self.frames_processed.inc()
        stage = self.stage_seconds
        stage.labels("queue").observe(queue_s)
        stage.labels("preprocess").observe(result.preprocess_ms / 1000)
        stage.labels("inference").observe(result.inference_ms / 1000)
        stage.labels("postprocess").observe(result.postprocess_ms / 1000)
        stage.labels("server").observe(server_s)

    # ----- SchedulerObserver --------------------------------------------------------------
    def batch_dispatched(self, size: int, waits_s: Sequence[float]) -> None:
        self.batch_size.observe(size)
        for wait in waits_s:
            self.dispatch_wait.observe(wait)

    def predict_outcome(self, outcome: str) -> None:
        self.predict_requests.labels(outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
