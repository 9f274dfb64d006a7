"""The composition root: settings in, a wired aiohttp ``Application`` out.

The only place (with ``wiring.py``, which maps ``Settings`` to each component's own config,
and the entry points) that reads ``Settings``. ``create_app`` builds every shared object in
data-path order — engine (model catalog → scheduler and its workers) → metrics (the
scheduler's observer) → stream registry → WebRTC adapters → rate limits, session tokens,
snapshots, subscriptions → routes — hands each component what it needs, and ties their
lifetimes to the app: warm-up starts with the server (``/readyz`` says 503 until it is done; a model
that fails it is fatal: ``on_fatal`` stops the process), shutdown closes every stream
through its normal close path, then stops the scheduler's workers. It is the only module that knows
every part; the process-wide aiortc/aioice adaptations are installed here and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from . import wiring
from .cluster.directory import Directory
from .cluster.durable import DurableStreams, declared_streams
from .cluster.forward import forwarding_middleware
from .config import DEFAULT_MODEL, ConfigError, Settings
from .engine.catalog import ModelCatalog
from .engine.detector import Detector
from .engine.images import ImageChecks
from .engine.loader import LoadOptions, load_catalog
from .engine.scheduler import Scheduler, SchedulerConfig, WorkerPlan, on_accelerator, plan_workers
from .ingest.source import PullConfig, open_pull_stream, start_configured_sources
from .ingest.spec import PullSpec, PullSpecError, parse_pull_spec
from .metrics import Metrics
from .outputs import EventHistory, EventOutputs, HistoryConfig, HistoryEvent, Mqtt, Webhooks, parse_mqtt_url
from .outputs.fanout import EventOutput
from .signaling import setup_routes
from .signaling.auth import require_publish, require_session_access
from .signaling.context import (
    API,
    IMAGE_CHECKS,
    INFERENCE,
    QUOTAS,
    RATE_LIMITS,
    REGISTRY,
    SNAPSHOTS,
    SUBSCRIPTIONS,
    TOKENS,
    ApiConfig,
)
from .signaling.cors import cors_middleware
from .signaling.durable import KEEPER, store_unavailable
from .signaling.errors import ERROR_SINK, error_middleware
from .signaling.history import EVENT_HISTORY, EventReader
from .signaling.hosts import host_middleware
from .signaling.limits import RateLimits
from .signaling.proxies import resolve_client
from .signaling.quotas import ClientQuotas
from .signaling.tokens import SessionTokens
from .store import EventPage, Store, StoreUnavailable
from .streams.control import ControlError
from .streams.registry import StreamRegistry, freeze_long_lived
from .streams.sinks import Subscriber
from .streams.snapshot import Snapshots
from .streams.stream import Stream
from .webrtc.dtls import use_dtls_interop
from .webrtc.ice import use_host_addresses
from .webrtc.late_sends import use_quiet_late_sends
from .webrtc.marker_release import release_counts, use_marker_release
from .webrtc.portrange import use_udp_ports

log = logging.getLogger(__name__)

#: Largest request body (``/predict`` images, offers); aiohttp answers 413 above it.
MAX_BODY_BYTES = 16 * 1024 * 1024


#: Called with a message when the server cannot go on (a model failed its warm-up).
FATAL: web.AppKey[Callable[[str], None]] = web.AppKey("fatal")
#: Whether start-up freezes the objects alive then (``create_app(freeze_gc=...)``).
FREEZE_GC: web.AppKey[bool] = web.AppKey("freeze_gc", bool)
#: Cluster mode: the directory and the forwarding (issue 22); absent for one process.
CLUSTER: web.AppKey[Cluster] = web.AppKey("cluster")
#: The durable pull streams: the store, the leases (issue 22).
DURABLE: web.AppKey[DurableStreams] = web.AppKey("durable", DurableStreams)
#: The event history's writer (issue 22): every stream's events into the store, in batches.
HISTORY: web.AppKey[EventHistory] = web.AppKey("history", EventHistory)


def worker_plan(settings: Settings) -> WorkerPlan:
    """How many inference workers, and the intra-op threads each worker's models get."""
    return plan_workers(settings.workers, settings.threads)


def load_models(settings: Settings, threads: int | None = None) -> ModelCatalog:
    """Every configured model, fetched, verified and loaded with ``threads`` intra-op
    threads (None: one worker's share, ``worker_plan``); raises ``ModelSourceError`` or
    ``ModelError`` saying exactly which model and what is wrong."""
    threads = worker_plan(settings).threads if threads is None else threads
    options = LoadOptions(imgsz=settings.imgsz, letterbox=settings.letterbox, threads=threads,
                          cache_dir=settings.model_cache, fetch_timeout=settings.model_fetch_timeout,
                          backend=settings.backend, precision=settings.precision, providers=settings.providers,
                          backend_cache=settings.backend_cache)
    if settings.models and settings.model != DEFAULT_MODEL:
        log.info("RTC_MODELS is set, so RTC_MODEL/--model (%s) is not used", settings.model)
    return load_catalog(settings.model_specs(), options)


def load_default_detector(settings: Settings, threads: int | None = None) -> Detector:
    """The default model's detector (tests and tools that need one model)."""
    return load_models(settings, threads).get()


def build_scheduler(settings: Settings, models: ModelCatalog | Detector | None = None) -> Scheduler:
    """The process's one scheduler: ``workers`` instances of the catalog (Triton's instance
    group), each with its share of the cores. Models handed in (tests, ``__main__``'s
    fail-fast load) are worker 0's; when they came from the settings the other workers load
    their own instances (from the verified cache), else they share worker 0's."""
    plan = worker_plan(settings)
    loaded_here = models is None
    first = load_models(settings, plan.threads) if models is None else models
    catalog = first if isinstance(first, ModelCatalog) else ModelCatalog.of(first)
    accelerator = on_accelerator(catalog)
    if accelerator and not settings.workers:
        plan = plan_workers(settings.workers, settings.threads, accelerator=True)
    own_instances = loaded_here or (isinstance(models, ModelCatalog) and not accelerator)
    instances = [catalog] + [load_models(settings, plan.threads) if own_instances else catalog
                             for _ in range(plan.workers - 1)]
    config = SchedulerConfig(
        workers=plan.workers,
        max_batch=settings.max_batch or (8 if accelerator else 1),
        batch_wait_s=settings.batch_wait_ms / 1000,
        predict_queue=settings.predict_queue,
        predict_max_wait_s=settings.predict_max_wait,
    )
    log.info("scheduler: %d worker(s) x %d thread(s), batches up to %d", plan.workers, plan.threads,
             config.max_batch)
    return Scheduler(catalog, config, instances=instances)


def build_metrics(scheduler: Scheduler, release_counts: Callable[[], Mapping[str, int]] | None = None) -> Metrics:
    """The server's metrics, made the scheduler's observer (batch sizes, dispatch waits,
    ``/predict`` outcomes) here, in the open, rather than as a side effect of building them."""
    metrics = Metrics([d.info for d in scheduler.models], release_counts, scheduler=scheduler)
    scheduler.observer = metrics
    return metrics


def build_outputs(settings: Settings, metrics: Metrics, history: EventHistory | None = None) -> EventOutputs:
    """Where every stream's events go beyond its own sinks: webhooks, MQTT (issue 21), the
    event history in the store (issue 22)."""
    # Webhooks always: streams may name their own receivers (their "webhooks" setting); it
    # holds no connection until there is something to deliver.
    outputs: list[EventOutput] = [Webhooks(wiring.webhook_targets(settings), wiring.webhook_config(settings), metrics)]
    if settings.mqtt_url:
        outputs.append(Mqtt(parse_mqtt_url(settings.mqtt_url), wiring.mqtt_config(settings), metrics))
    if history is not None:
        outputs.append(history)
    return EventOutputs(outputs)


def build_history(metrics: Metrics, store_of: Callable[[], Store | None]) -> EventHistory:
    """The event history's writer: batches of events appended to the store that
    ``store_of`` returns (the durable streams' store, open from start-up to shutdown; a
    batch while it is not open is dropped and counted like one the database refused)."""

    async def write(batch: Sequence[HistoryEvent]) -> None:
        store = store_of()
        if store is None:
            raise StoreUnavailable("the store is not open")
        await store.add_events(batch)

    return EventHistory(write, HistoryConfig(), metrics)


def event_reader(store_of: Callable[[], Store | None]) -> EventReader:
    """``GET /events``'s one door to the store: a page of its event history."""

    async def read(*, stream: str | None, type: str | None, since: datetime | None,  # noqa: A002
                   limit: int, cursor: str | None) -> EventPage:
        store = store_of()
        if store is None:
            raise StoreUnavailable("the store is not open")
        return await store.list_events(stream=stream, type=type, since=since, limit=limit, cursor=cursor)

    return read


def build_registry(settings: Settings, scheduler: Scheduler, metrics: Metrics | None = None,
                   events: EventOutputs | None = None) -> StreamRegistry:
    """The registry of live streams under ``max_sessions``, with the defaults and limits
    every new stream gets; ``metrics``: None builds them (``build_metrics``); ``events``:
    the event outputs every stream publishes to (none if empty)."""
    metrics = build_metrics(scheduler) if metrics is None else metrics
    registry = StreamRegistry(scheduler, metrics, max_sessions=settings.max_sessions,
                              defaults=wiring.stream_defaults(settings), limits=wiring.stream_limits(settings),
                              events=events if events else None)
    metrics.count_sessions(lambda: len(registry))
    return registry


def configured_sources(settings: Settings, models: Sequence[str],
                       classes_of: Callable[[str | None], Sequence[str]] | None = None) -> list[PullSpec]:
    """``RTC_SOURCES`` as pull specs, their models (and the classes their zones and lines
    name) checked against the loaded ones; ``ConfigError`` (exit 2) for one that names
    another: never half-configured."""
    specs = []
    for index, entry in enumerate(settings.sources):
        try:
            specs.append(parse_pull_spec(entry, models, classes_of))
        except PullSpecError as exc:
            raise ConfigError(f"sources[{index}]: {exc}") from exc
    return specs


def leases_sources(settings: Settings) -> bool:
    """Whether ``RTC_SOURCES`` run under leases: on a shared database (replicas), where each
    replica starting its own copy would pull every camera N times. With the embedded SQLite
    (one process) they start with the server, as they always have, under fresh ids."""
    return bool(settings.database_url)


def build_durable_streams(settings: Settings, registry: StreamRegistry, pull: PullConfig,
                          models: Callable[[], Sequence[str]]) -> DurableStreams:
    """The store and the leases, with the two things they may do to the registry: run a
    stored pull stream here under its id (in the background, retrying, as ``RTC_SOURCES``),
    and stop one here. Every stream that closes is reported, so that one that ended by
    itself is forgotten."""

    async def open_stream(stream_id: str, spec: dict[str, object]) -> None:
        if registry.get(stream_id) is not None:
            return
        await open_pull_stream(registry, pull, parse_pull_spec(spec, models()), wait=False, stream_id=stream_id)

    async def close_stream(stream_id: str, reason: str) -> None:
        stream = registry.get(stream_id)
        if stream is not None:
            await stream.close(reason)

    durable = DurableStreams(wiring.store_config(settings), wiring.lease_config(settings), open_stream, close_stream,
                             event_retention=settings.event_retention,
                             declared=declared_streams(settings.sources) if leases_sources(settings) else None)
    registry.closed_listeners.append(lambda stream: durable.stream_closed(stream.id, stream.source_kind))
    return durable


@dataclass
class Cluster:
    """Cluster mode (``RTC_INTERNAL_URL`` set): the live directory and the forwarding middleware."""

    directory: Directory
    middleware: Callable[..., Awaitable[web.StreamResponse]]
    client: aiohttp.ClientSession | None = None


def build_cluster(settings: Settings, registry: StreamRegistry, durable: DurableStreams, api: ApiConfig,
                  tokens: SessionTokens) -> Cluster:
    """Every session entered in the directory as it opens and closes; requests for another
    replica's session forwarded to it after the caller's rights are checked here."""
    directory = Directory(lambda: durable.store, wiring.replica_id(settings), settings.internal_url,
                          settings.lease_seconds)
    registry.opened_listeners.append(lambda stream: directory.opened(stream.id, stream.source_kind))
    registry.closed_listeners.append(lambda stream: directory.closed(stream.id))

    def authorize(request: web.Request, session_id: str) -> None:
        """The rights the owner would check, checked at the first hop: a WHIP session URL is
        the publisher's capability (the publish right); every other session route needs that
        session's own token or the operate right."""
        if request.path.startswith("/whip/"):
            require_publish(request, api)
        else:
            require_session_access(request, api, tokens, session_id)

    def client() -> aiohttp.ClientSession:
        assert cluster.client is not None, "the cluster's client opens with the app"
        return cluster.client

    cluster = Cluster(directory, forwarding_middleware(directory, settings.internal_secret,
                                                       lambda sid: registry.get(sid) is not None, authorize, client))
    return cluster


#: ``PATCH /sessions/{id}``: the settings of a kept pull stream are written back.
_PATCHED_SESSION = re.compile(r"^/sessions/([0-9A-Za-z_-]{1,128})$")
#: The settings the ack states as they are stored. The webhooks are not among them (the ack
#: shows them without their secrets): they are taken from the stream's settings in force.
_SETTING_KEYS = ("conf", "iou", "classes", "model", "max_fps", "tracking", "zones", "lines")


def stored_webhooks(stream: Stream) -> list[dict[str, str]] | None:
    """A stream's own webhooks as ``POST /streams`` takes them (secrets included: the spec
    is what brings the stream back); None when it has none."""
    hooks = [{"url": w.url, **({"secret": w.secret} if w.secret is not None else {})}
             for w in stream.settings.webhooks]
    return hooks or None


def keep_settings(durable: DurableStreams, registry: StreamRegistry) -> Callable[..., Awaitable[web.StreamResponse]]:
    """After a successful ``PATCH /sessions/{id}`` of a pull stream held here, write the
    settings in force (the ack, and the stream's webhooks) into its stored spec: a restart or
    a failover brings it back as it is now. The handler stays as it is; a database away is a
    503 (the change is live already, a retry is harmless)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                         ) -> web.StreamResponse:
        response = await handler(request)
        match = _PATCHED_SESSION.match(request.path)
        if request.method != "PATCH" or match is None or response.status != 200 \
                or not isinstance(response, web.Response) or not isinstance(response.body, bytes) \
                or not durable.is_kept(match.group(1)):
            return response
        ack = json.loads(response.body)
        settings: dict[str, Any] = {k: ack.get(k) for k in _SETTING_KEYS}
        stream = registry.get(match.group(1))
        if stream is not None:
            settings["webhooks"] = stored_webhooks(stream)
        try:
            await durable.settings_changed(match.group(1), settings)
        except StoreUnavailable as exc:
            raise store_unavailable(exc) from exc
        return response

    return middleware


async def _quiet_late_sends(_app: web.Application) -> None:
    use_quiet_late_sends(asyncio.get_running_loop())


def create_app(settings: Settings, models: ModelCatalog | Detector | None = None,
               on_fatal: Callable[[str], None] | None = None, *, freeze_gc: bool = True) -> web.Application:
    """The wired app. ``models``: a loaded catalog, one detector, or None to load the
    configured ones. ``on_fatal`` (the process entry point passes one that stops the
    server) is called when the server cannot become ready; without it the failure is
    logged and ``/readyz`` reports it. ``freeze_gc``: at start-up, move every object alive
    then to the garbage collector's permanent generation (``freeze_long_lived``), which a
    process serving one app wants; one that builds many apps (the test suite) leaves it
    off, or each start-up walks all of that process's objects."""
    hosts = wiring.host_policy(settings)  # a bad RTC_PUBLIC_HOSTS entry: ConfigError before anything starts
    use_host_addresses(settings.ice_addresses)
    use_udp_ports(settings.udp_ports)
    use_marker_release(settings.marker_release)  # before any receiver exists
    use_dtls_interop()  # RSA peer certificates (GStreamer), a clear log for unusable ones
    inference = build_scheduler(settings, models)
    # The client first (behind trusted proxies: the address and scheme they name), then the
    # Host allow-list (421 for a name we do not serve: DNS rebinding), then CORS outside the
    # error middleware, so error answers carry CORS headers too.
    middlewares = [resolve_client(settings.trusted_proxies, settings.proxy_header), host_middleware(hosts),
                   cors_middleware(settings.cors_origins, hosts), error_middleware]
    metrics = build_metrics(inference, release_counts)
    # the history reads ``durable`` (built below, with the registry) when it writes
    history = build_history(metrics, lambda: durable.store)
    outputs = build_outputs(settings, metrics, history)
    registry = build_registry(settings, inference, metrics, outputs)
    api = wiring.api_config(settings)
    tokens = SessionTokens(wiring.token_secret(settings), settings.token_ttl)
    durable = build_durable_streams(settings, registry, api.pull, lambda: inference.models.names)
    cluster = build_cluster(settings, registry, durable, api, tokens) if settings.internal_url else None
    if cluster is not None:  # any replica answers: after the error middleware, so refusals are JSON
        middlewares.append(cluster.middleware)
    middlewares.append(keep_settings(durable, registry))  # on the owner, after any forwarding
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    subscriptions: set[Subscriber] = set()
    metrics.count_subscribers(lambda: len(subscriptions))
    log_rights(settings, api.loopback_only)
    app[API] = api
    app[INFERENCE] = inference
    # /predict's header checks: 2 threads of their own, 16 running or waiting (one client's burst of
    # eight large images must not be refused for a check that takes milliseconds)
    app[IMAGE_CHECKS] = ImageChecks()
    app[REGISTRY] = registry
    app[RATE_LIMITS] = RateLimits(wiring.session_rate_limit(settings), wiring.predict_rate_limit(settings))
    # Per-client quotas count the streams the registry still has: released however one ends.
    app[QUOTAS] = ClientQuotas(wiring.quota_limits(settings), lambda stream_id: registry.get(stream_id) is not None)
    app[TOKENS] = tokens
    app[SNAPSHOTS] = Snapshots(settings.snapshot_rate, settings.snapshot_quality)
    app[SUBSCRIPTIONS] = subscriptions
    app[ERROR_SINK] = metrics.count_error
    app[FATAL] = on_fatal or (lambda reason: None)
    app[FREEZE_GC] = freeze_gc
    app[DURABLE] = durable
    app[KEEPER] = durable
    app[HISTORY] = history
    app[EVENT_HISTORY] = event_reader(lambda: durable.store)
    setup_routes(app)
    # The store first: it opens before anything starts (unreachable: the process exits 1)
    # and closes last, releasing the leases once every stream here is closed.
    app.cleanup_ctx.append(_durability)
    # The history's writer: started once the store is open, and (cleanup contexts end in
    # reverse) ended after the streams closed and before the store closes, writing their
    # last events.
    app.cleanup_ctx.append(_event_history)
    if cluster is not None:
        app[CLUSTER] = cluster
        app.cleanup_ctx.append(_cluster_client)
    app.on_shutdown.append(_stop_leases)
    app.cleanup_ctx.append(_lifetime)
    app.on_cleanup.append(_close_snapshots)  # after _lifetime's cleanup: no stream is left to snapshot
    app.on_startup.append(lambda _app: outputs.start())  # event outputs: webhooks (issue 21)
    app.on_startup.append(_quiet_late_sends)  # aiortc's SCTP sends after a session ended: one DEBUG line
    app.on_cleanup.append(lambda _app: outputs.close())  # after the streams: their last events go out first
    # RTC_SOURCES (issue 13): pull streams started with the server, their models checked now.
    sources = configured_sources(settings, inference.models.names, registry.class_names)
    for index, spec in enumerate(sources):  # the webhooks they name pass the SSRF rules
        try:
            registry.check_settings(spec.settings(registry.defaults(), registry.class_names))
        except ControlError as exc:
            raise ConfigError(f"sources[{index}]: {exc}") from exc
    if not leases_sources(settings):  # else: declared to the store, run under leases (build_durable_streams)
        app.on_startup.append(start_configured_sources(registry, api.pull, sources))
    return app


def log_rights(settings: Settings, loopback_only: bool) -> None:
    """Say once at start who may do what when it is not the single-machine default."""
    if not loopback_only and not settings.operator_token:
        log.warning("the operator API (GET /sessions, other sessions, /streams) is closed: this server is "
                    "reachable beyond this machine (RTC_HOST %s, RTC_TRUSTED_PROXIES or RTC_PUBLIC_HOSTS set) "
                    "and has no operator token; set RTC_OPERATOR_TOKEN (comma-separated, from a secret) to use it",
                    settings.host)
    if not loopback_only and not settings.auth_token:
        log.info("publishing (/offer, /whip, /predict) is public: set RTC_AUTH_TOKEN to require a token")
    if not loopback_only and not settings.public_hosts:
        log.warning("only loopback Host names are served (others get 421): set RTC_PUBLIC_HOSTS to the "
                    "name(s) clients use to reach this server")
    elif "*" in settings.public_hosts:
        log.warning("RTC_PUBLIC_HOSTS=*: every Host is served, which leaves DNS rebinding open")


async def _durability(app: web.Application) -> AsyncIterator[None]:
    durable = app[DURABLE]
    await durable.open()  # StoreConfigError / StoreUnavailable: start-up fails, saying why
    durable.start()
    yield
    await durable.close()


async def _event_history(app: web.Application) -> AsyncIterator[None]:
    history = app[HISTORY]
    await history.start()
    yield
    await history.close()


async def _stop_leases(app: web.Application) -> None:
    """Before the streams are closed: start none, and make each close a hand-over."""
    if CLUSTER in app:
        app[CLUSTER].directory.stopping = True
    await app[DURABLE].stop()


async def _cluster_client(app: web.Application) -> AsyncIterator[None]:
    cluster = app[CLUSTER]
    cluster.client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=3.0))
    yield
    await cluster.directory.settle(timeout=5.0)
    await cluster.client.close()


async def _close_snapshots(app: web.Application) -> None:
    app[SNAPSHOTS].close()
    app[IMAGE_CHECKS].close()


async def _warm_up(app: web.Application) -> None:
    """Warm every model; one that fails (a file that loads but cannot run) is fatal."""
    inference = app[INFERENCE]
    try:
        await inference.warmup()
    except Exception as exc:
        catalog = inference.models
        name = next((n for n in catalog.names if not catalog.is_ready(n)), catalog.default)
        reason = f"model {name!r} failed its warm-up run, so it cannot serve: {type(exc).__name__}: {str(exc).strip()}"
        catalog.mark_failed(name, reason)
        log.error("%s; stopping", reason)
        app[FATAL](reason)


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    if app[FREEZE_GC]:
        freeze_long_lived()  # before listening: the stream registry's collections skip what lives on
    warmup = asyncio.create_task(_warm_up(app), name="warmup")
    yield
    await app[REGISTRY].close_all()
    if not warmup.done():
        warmup.cancel()
    await asyncio.gather(warmup, return_exceptions=True)
    await app[INFERENCE].aclose()  # the calls in flight end in a thread: the loop is not blocked
    log.info("server stopped")
