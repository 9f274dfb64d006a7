"""Server settings: one frozen dataclass, filled from command-line flags and environment.

Every flag has an environment variable (``RTC_<NAME>``) so that containers and Cloud Run
can configure the server without a command line; Cloud Run's own ``PORT`` is honoured
too. Precedence: flag > ``RTC_*`` variable > ``PORT`` (port only) > default.

Only the composition root (``app.py``, ``wiring.py``, ``__main__.py``, ``healthcheck.py``)
reads ``Settings``; it maps them to each component's own small config. This module may
import components downward (model specs, pull specs, backend names) to validate a value
the way the component will read it; no component imports it. Fields and their checks are
grouped by component: HTTP, process, WebRTC, streams, engine (models, backends,
scheduler), pull sources, consumers.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import site
import sys
import sysconfig
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .engine.artifacts import backend_cache_dir, model_cache_dir
from .engine.model_sources import ModelSpec, ModelSpecError, parse_spec, parse_specs

DEFAULT_MODEL = Path("models/yolo11n.onnx")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_static_dir() -> Path:
    """The page: ``static/`` beside the package in a checkout (``make run``, editable
    installs), else the copy a wheel installed as data under ``<prefix>/share/rtc-yolo/static``
    (setup.cfg ``data_files``; ``pip install .`` then ``rtc-server`` serves the page)."""
    checkout = Path(__file__).resolve().parent.parent / "static"
    if (checkout / "index.html").is_file():
        return checkout
    for prefix in (sysconfig.get_path("data"), sys.prefix, site.getuserbase()):
        installed = Path(prefix) / "share" / "rtc-yolo" / "static"
        if (installed / "index.html").is_file():
            return installed
    return checkout  # nowhere: the error names the checkout path


class ConfigError(ValueError):
    """A setting has a value the server cannot use; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told. Field names match the ``RTC_*`` variables."""

    # ----- HTTP: where it listens, who may call it, how much a request may cost ------------------
    host: str = "127.0.0.1"
    port: int = 8080
    #: TLS certificate and key (PEM) for serving HTTPS directly; both or neither.
    cert: Path | None = None
    key: Path | None = None
    #: The *publish* token(s): /offer, /whip, /predict, /ice-servers (opening one's own
    #: session); empty = publishing is public. (Its name predates the operator token.)
    auth_token: tuple[str, ...] = field(default=(), repr=False)  # secrets stay out of logs
    #: The *operator* token(s): GET /sessions, other sessions, /streams (and /metrics with
    #: ``metrics_auth``). Empty: operating is closed, unless ``host`` is loopback only
    #: (there it follows ``auth_token``, as on one machine before).
    operator_token: tuple[str, ...] = field(default=(), repr=False)
    #: Host names (``host`` or ``host:port``) the server answers for besides the loopback
    #: names; any other ``Host`` gets 421 (DNS rebinding). ``*``: no check (unsafe).
    public_hosts: tuple[str, ...] = ()
    #: Whether /metrics needs the operator token too.
    metrics_auth: bool = False
    #: Origins allowed to call the API cross-origin (``*`` = any); empty = same origin only.
    cors_origins: tuple[str, ...] = ()
    #: Networks (CIDRs) of the reverse proxies / load balancers in front of the server. Only
    #: when the TCP peer is one of them are ``Forwarded`` / ``X-Forwarded-For`` /
    #: ``X-Forwarded-Proto`` believed (rtc_server/signaling/proxies.py); empty: never.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: The one header those proxies set, the only one believed: ``X-Forwarded-For`` (Google's
    #: front ends, nginx, HAProxy; its scheme from ``X-Forwarded-Proto``) or ``Forwarded``.
    proxy_header: str = "X-Forwarded-For"
    #: Largest request body (/predict images); /offer bodies are capped at 64 KiB regardless.
    max_body_bytes: int = 16 * 1024 * 1024
    #: Largest /predict image in pixels, read from the header before any decoding.
    max_image_pixels: int = 25_000_000
    #: Per client address, requests per second to each session route (/offer, /whip and its
    #: session URLs, POST /streams, the sessions API, subscriptions: a token bucket per route);
    #: /predict has its own, ``predict_rate_limit``. 0 turns it off.
    rate_limit: float = 5.0
    #: Requests a client may make in a burst before ``rate_limit`` applies.
    rate_burst: int = 20
    #: Per client, ``/predict`` requests per second (its own bucket; 0: off). The default
    #: serves a camera POSTing frames at 30 fps with room to spare.
    predict_rate_limit: float = 60.0
    #: ``/predict`` requests a client may make at once before ``predict_rate_limit`` applies.
    predict_rate_burst: int = 60
    #: Serve ``/metrics`` on this port instead of the main one (e.g. 9090, reachable inside
    #: the cluster only); 0: on the main port, as before.
    metrics_port: int = 0
    static_dir: Path = field(default_factory=lambda: default_static_dir())

    # ----- process: logs and shutdown ------------------------------------------------------------
    log_level: str = "INFO"
    #: "text" (human) or "json" (one object per line, Cloud Logging field names).
    log_format: str = "text"
    #: On SIGTERM: seconds to let live sessions end on their own (new ones get 503 draining,
    #: readiness says so) before the rest are closed. 0: close them at once.
    drain_seconds: float = 0.0

    # ----- WebRTC: ICE, TURN, ports, the receive path, peer timeouts -----------------------------
    #: RTCIceServer dicts, e.g. ``[{"urls": "turn:turn.example:443", ...}]``. Empty by
    #: default so the server never contacts a public STUN server unless told to.
    ice_servers: tuple[dict[str, Any], ...] = ()
    #: Local addresses to offer host candidates on; empty means aioice's own choice.
    ice_addresses: tuple[str, ...] = ()
    #: Inclusive UDP port range for host candidates, e.g. ``(40000, 40100)``; None: any port.
    udp_ports: tuple[int, int] | None = None
    #: Address to advertise instead of the local one in host candidates (1:1 NAT: a GCE
    #: VM's external IP); empty: advertise the local addresses as they are.
    public_address: str = ""
    #: Release each received video frame on its RTP marker bit (rtc_server/webrtc/marker_release.py)
    #: instead of when the next frame starts: one frame interval less latency.
    marker_release: bool = True
    #: TURN REST API (coturn ``use-auth-secret``): the shared secret from which every page and
    #: every server session gets its own short-lived credential. Empty: no generated TURN.
    turn_secret: str = field(default="", repr=False)
    #: The TURN server's URLs for those credentials, e.g. ``turn:turn.example.com:3478``.
    turn_urls: tuple[str, ...] = ()
    #: Seconds a generated TURN credential stays valid (coturn refuses it afterwards).
    turn_ttl: int = 3600
    #: Seconds a session may take from offer to a connected peer before it is reaped.
    connect_timeout: float = 15.0
    #: Seconds the server may spend gathering its ICE candidates for one answer.
    ice_gather_timeout: float = 10.0
    #: Seconds without a video frame after which a session is reaped.
    idle_timeout: float = 30.0
    #: Networks (CIDRs) a peer's remote ICE candidates may be in although not public: a LAN's
    #: for clients on it, 127.0.0.0/8 for tests. Candidates elsewhere that are not public
    #: (private, link-local, metadata, loopback, multicast) get no STUN check: dropped.
    ice_allow_networks: tuple[str, ...] = ()
    #: Remote ICE candidates per session at most, offer and trickle (WHIP PATCH) together.
    max_remote_candidates: int = 32

    # ----- streams: how many, how chatty, how fast -----------------------------------------------
    #: Live streams at most (WebRTC, WHIP and pull together); the next gets 503 + Retry-After. 0 = no cap.
    max_sessions: int = 16
    #: Live sessions (/offer and /whip together) one client may hold at once, keyed by its
    #: address (an IPv6 client by its /64); the next gets 429 ``session_quota``. 0: no quota.
    max_sessions_per_client: int = 4
    #: Live pull streams (POST /streams) one client may hold at once; 429 ``pull_quota``
    #: beyond. 0: no quota. Streams from ``sources`` belong to no client.
    max_pulls_per_client: int = 4
    #: Control messages per second per sender (the data channel, each WebSocket subscriber:
    #: a token bucket each, burst 2x).
    message_rate: float = 20.0
    #: Detections per second per stream at most (0: as many as its share gives); a stream
    #: may ask for less (offer ``"max_fps"``, control ``{"type": "config", "max_fps": F}``).
    max_fps: float = 0.0

    # ----- engine: the models, their thresholds and geometry -------------------------------------
    #: The one model: a path, or a source with options (``gs://b/m.onnx#sha256=...``, see
    #: ``engine/model_sources.py``). ``models`` replaces it when set.
    model: Path | str = DEFAULT_MODEL
    #: Several models, the first the default: ``name=source[#options],...`` or a JSON list.
    #: When set, ``model`` is not used.
    models: tuple[ModelSpec, ...] = ()
    #: Where downloaded (https://, gs://) models are kept, by sha256.
    model_cache: Path = field(default_factory=model_cache_dir)
    #: Seconds a model download may stall (https) or keep retrying (gs) before start-up fails.
    model_fetch_timeout: float = 30.0
    #: Confidence threshold on the best class score (Ultralytics' ``conf``).
    conf: float = 0.25
    #: IoU threshold of the class-aware NMS (Ultralytics' ``iou``).
    iou: float = 0.7
    max_det: int = 300
    #: Long side of the model input; the short side is padded to a multiple of 32.
    imgsz: int = 640
    #: "rect" (minimal padding, the Ultralytics predict default) or "square" (imgsz x imgsz).
    letterbox: str = "rect"

    # ----- engine: backends, which runtime and precision run the models --------------------------
    #: "auto" (the fastest path measured within accuracy bounds), "onnxruntime" or "openvino".
    backend: str = "auto"
    #: "auto", "f32", "bf16", "f16" or "int8" (int8: the IR `rtc_server.models quantize` makes).
    precision: str = "auto"
    #: onnxruntime execution providers in priority order, e.g. CUDAExecutionProvider,CPUExecutionProvider;
    #: empty: the CPU. One that does not load stops the server instead of a silent CPU fallback.
    providers: tuple[str, ...] = ()
    #: Where auto's choice and OpenVINO's compiled models are cached; None ("none"): no cache.
    backend_cache: Path | None = field(default_factory=lambda: _default_backend_cache())
    #: Backend threads of each worker (onnxruntime intra-op, OpenVINO INFERENCE_NUM_THREADS);
    #: 0: the cores shared out among the workers (``engine.scheduler.plan_workers``).
    threads: int = 0

    # ----- engine: the scheduler, workers, batching, /predict admission --------------------------
    #: Concurrent inference calls, each with its own model instance and share of the
    #: cores; 0: from the backend and core count (one per 4 cores on a CPU, at least 1).
    workers: int = 0
    #: Newest frames of different streams (same model and frame size) in one inference
    #: call at most; 0: from the backend (1 on a CPU, where batching gains ~nothing; 8 on a GPU).
    max_batch: int = 0
    #: Milliseconds a ready frame may wait for a batch to fill (0: never wait).
    batch_wait_ms: float = 0.0
    #: /predict requests that may wait for the model; the next gets 503 ``overloaded`` at once.
    #: 0: none may wait: a request runs if a worker is free for it now, else 503 at once.
    predict_queue: int = 4
    #: Seconds a /predict request may wait for the model before it gets 503 ``overloaded``.
    predict_max_wait: float = 1.5

    # ----- pull sources: URLs the server fetches itself ------------------------------------------
    #: Streams pulled from the start (RTSP cameras...): ``{"url", ...}`` objects as
    #: ``POST /streams`` takes them; they count against ``max_sessions``.
    sources: tuple[Any, ...] = field(default=(), repr=False)  # URLs may carry credentials
    #: Networks (CIDRs) a pull source may be in although not public: a LAN camera's,
    #: 127.0.0.0/8 for tests. Everything non-public is refused otherwise (SSRF).
    source_allow_networks: tuple[str, ...] = ()
    #: Whether pull URLs may be ``file:`` (local files the server process can read).
    source_allow_file: bool = False
    #: Seconds a pull source may take to open, and to deliver its next packet.
    source_open_timeout: float = 10.0
    source_read_timeout: float = 10.0
    #: Longest wait, in seconds, between reconnect attempts of a pull source (backoff cap).
    source_reconnect_max: float = 30.0
    # ----- what a source may send (every source's frames; pull playlists) -------------------------
    #: Largest decoded video frame in pixels (width x height); 4K UHD (3840x2160) fits. A
    #: stream (WebRTC, WHIP or pull) whose frames are larger is refused or ended, naming the
    #: size and the cap, before any frame is converted or snapshotted.
    max_frame_pixels: int = 3840 * 2160
    #: Largest HLS playlist a pull source may load, in bytes, and most segments it may list.
    source_max_playlist_bytes: int = 4 * 1024 * 1024
    source_max_segments: int = 50_000

    # ----- consumers: subscribers, session tokens, snapshots -------------------------------------
    #: Key that signs session tokens (``?token=`` on events/ws/snapshot); empty: a random
    #: key per process (tokens then die with the process, as its sessions do).
    token_secret: str = field(default="", repr=False)
    #: Seconds a session token stays valid for opening a subscription or a snapshot.
    token_ttl: float = 600.0
    #: Messages queued per SSE/WebSocket subscriber; when full the oldest is dropped (counted).
    subscriber_queue: int = 32
    #: SSE + WebSocket subscribers per session at most (0 = no cap).
    max_subscribers: int = 16
    #: Seconds between keep-alives on a subscription (SSE comment line, WebSocket ping).
    keepalive: float = 15.0
    #: JPEG snapshots encoded per second per session at most (429 beyond; 0 = no snapshots).
    snapshot_rate: float = 4.0
    #: JPEG quality of snapshots (1-100).
    snapshot_quality: int = 80

    # ----- store and replicas: durable state, leases, the internal hop (issue 22) ----------------
    #: Where the embedded SQLite store (``rtc-yolo.db``) lives when ``database_url`` is empty.
    data_dir: Path = Path("data")
    #: ``postgresql://USER:PASSWORD@HOST:PORT/DB`` for replicas sharing one database; empty:
    #: the SQLite file under ``data_dir`` (one process).
    database_url: str = field(default="", repr=False)  # carries a password
    #: Seconds a pull stream's lease lives without renewal: a killed owner's failover time.
    lease_seconds: float = 15.0
    #: Where the other replicas reach this one (``http://POD_IP:8080``), never public; empty:
    #: one process, nothing forwarded.
    internal_url: str = ""
    #: The internal hop's shared secret (every replica the same); required with ``internal_url``.
    internal_secret: str = field(default="", repr=False)
    #: Seconds of event history kept (``GET /events``); 0: kept forever.
    event_retention: float = 7 * 24 * 3600.0
    # ----- event outputs: webhooks (issue 21) ------------------------------------------------------
    #: Receivers every stream's events are POSTed to (http/https; the pull sources' SSRF rules).
    webhook_urls: tuple[str, ...] = field(default=(), repr=False)  # URLs may carry credentials
    #: Key of the ``X-RTC-Signature`` HMAC-SHA256 of each body (empty: unsigned).
    webhook_secret: str = field(default="", repr=False)
    #: Networks (CIDRs) a webhook receiver may be in although not public.
    webhook_allow_networks: tuple[str, ...] = ()
    #: Seconds one webhook POST may take; retries after a failure (backoff 0.5 s, doubling).
    webhook_timeout: float = 5.0
    webhook_retries: int = 3
    #: Events waiting per webhook receiver; beyond it the oldest is dropped (counted).
    webhook_queue: int = 256
    #: MQTT broker for every stream's events: ``mqtt://[user:pass@]host[:port][/prefix]`` or
    #: ``mqtts://`` (TLS); empty: none.
    mqtt_url: str = field(default="", repr=False)  # may carry a password
    #: Also publish detection messages (QoS 0) to ``<prefix>/<stream id>/detections``.
    mqtt_detections: bool = False
    #: Messages waiting for the broker; beyond it the oldest is dropped (counted).
    mqtt_queue: int = 1024
    #: CA certificates (PEM) for an ``mqtts://`` broker with a private CA.
    mqtt_ca: Path | None = None

    def __post_init__(self) -> None:
        """Check every setting, one component at a time (the same groups as the fields)."""
        self._validate_http()
        self._validate_process()
        self._validate_webrtc()
        self._validate_streams()
        self._validate_models()
        self._validate_backends()
        self._validate_scheduler()
        self._validate_pull()
        self._validate_consumers()
        self._validate_store()
        self._validate_outputs()

    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The models to serve, the default first: ``models``, else the one ``model``."""
        if self.models:
            return self.models
        if isinstance(self.model, Path):  # a plain path, taken literally
            return (ModelSpec(name=self.model.stem, source=str(self.model)),)
        return (parse_spec(self.model),)

    def _validate_http(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not in 1..65535")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("cert and key go together: give both or neither")
        for name in ("cert", "key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"{name} file not found: {path}")
        if any(not t for t in self.auth_token):
            raise ConfigError("auth_token has an empty token")
        if any(not t for t in self.operator_token):
            raise ConfigError("operator_token has an empty token")
        if set(self.operator_token) & set(self.auth_token):
            raise ConfigError("operator_token and auth_token share a token: a publisher would be an operator")
        for entry in self.public_hosts:  # each name's form is checked where it is read (wiring.host_policy)
            if not entry.strip() or "/" in entry or "@" in entry:
                raise ConfigError(f"public_hosts: {entry!r} is not host[:port] (or '*')")
        try:  # Settings(trusted_proxies=("10.0.0.0/8",)) works as well as parsed networks
            networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from exc
        object.__setattr__(self, "trusted_proxies", networks)
        # The names signaling/proxies.py reads (not imported: the health check loads this module).
        headers = {"x-forwarded-for": "X-Forwarded-For", "forwarded": "Forwarded"}
        header = headers.get(self.proxy_header.strip().lower())
        if header is None:
            raise ConfigError(f"proxy_header {self.proxy_header!r} is not one of {', '.join(headers.values())}")
        object.__setattr__(self, "proxy_header", header)
        for name in ("max_body_bytes", "max_image_pixels"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be positive")
        if self.rate_burst < 0:
            raise ConfigError(f"rate_burst {self.rate_burst} must be >= 0")
        if self.rate_limit < 0:
            raise ConfigError("rate_limit must be >= 0 and message_rate > 0")
        if self.rate_limit > 0 and self.rate_burst < 1:
            raise ConfigError("rate_burst must be >= 1 when rate_limit is on")
        if self.predict_rate_limit < 0 or (self.predict_rate_limit > 0 and self.predict_rate_burst < 1):
            raise ConfigError("predict_rate_limit must be >= 0, and predict_rate_burst >= 1 when it is on")
        if not 0 <= self.metrics_port < 65536 or (self.metrics_port and self.metrics_port == self.port):
            raise ConfigError(f"metrics_port {self.metrics_port} must be 0 (main port) or not {self.port}")

    def _validate_process(self) -> None:
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format {self.log_format!r} is not 'text' or 'json'")
        if self.drain_seconds < 0:
            raise ConfigError(f"drain_seconds {self.drain_seconds} must be >= 0")

    def _validate_webrtc(self) -> None:
        if self.udp_ports is not None and not 1024 <= self.udp_ports[0] <= self.udp_ports[1] <= 65535:
            raise ConfigError(f"udp_ports {self.udp_ports} is not a range within 1024..65535")
        if self.public_address:
            try:
                ipaddress.ip_address(self.public_address)
            except ValueError as exc:
                raise ConfigError(f"public_address {self.public_address!r} is not an IP address") from exc
        if bool(self.turn_secret) != bool(self.turn_urls):
            raise ConfigError("turn_secret and turn_urls go together: the secret signs credentials for those URLs")
        for url in self.turn_urls:
            if not url.startswith(("turn:", "turns:")):
                raise ConfigError(f"turn_urls: {url!r} is not a turn: or turns: URL")
        if not 0 < self.turn_ttl <= 7 * 24 * 3600:
            raise ConfigError(f"turn_ttl {self.turn_ttl} must be 1 s .. 7 days")
        for name in ("connect_timeout", "ice_gather_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be a positive number of seconds")
        if not 1 <= self.max_remote_candidates <= 10_000:
            raise ConfigError(f"max_remote_candidates {self.max_remote_candidates} must be 1 .. 10000")
        from .addresses import parse_networks  # stdlib only, like ingest.policy below

        try:
            parse_networks(self.ice_allow_networks)
        except ValueError as exc:
            raise ConfigError(f"ice_allow_networks: {exc}") from exc

    def _validate_streams(self) -> None:
        for name in ("max_sessions", "max_sessions_per_client", "max_pulls_per_client"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be >= 0")
        if self.message_rate <= 0:
            raise ConfigError("rate_limit must be >= 0 and message_rate > 0")
        if not 0.0 <= self.max_fps <= 240.0:
            raise ConfigError(f"max_fps {self.max_fps} is not in [0, 240] (0: no cap)")
        if self.udp_ports is not None:
            # One UDP port per session and local address: more sessions than ports would be
            # accepted and then fail at ICE (connect timeout) for want of a host candidate.
            ports = self.udp_ports[1] - self.udp_ports[0] + 1
            if self.max_sessions == 0 or self.max_sessions > ports:
                raise ConfigError(f"max_sessions {self.max_sessions or 'unlimited'} needs more UDP ports than "
                                  f"udp_ports {self.udp_ports[0]}-{self.udp_ports[1]} has ({ports}); set "
                                  f"RTC_MAX_SESSIONS <= {ports} or widen RTC_UDP_PORTS")

    def _validate_models(self) -> None:
        """The models, how they are fetched, and the thresholds and geometry they run with."""
        try:
            self.model_specs()
        except ModelSpecError as exc:
            raise ConfigError(str(exc)) from exc
        if not self.model_fetch_timeout > 0:
            raise ConfigError(f"model_fetch_timeout {self.model_fetch_timeout} must be a positive number of seconds")
        if not 0.0 <= self.conf <= 1.0:
            raise ConfigError(f"conf {self.conf} is not in [0, 1]")
        if not 0.0 <= self.iou <= 1.0:
            raise ConfigError(f"iou {self.iou} is not in [0, 1]")
        if self.max_det <= 0:
            raise ConfigError(f"max_det {self.max_det} must be positive")
        if self.imgsz <= 0 or self.imgsz % 32:
            raise ConfigError(f"imgsz {self.imgsz} is not a positive multiple of 32")
        if self.letterbox not in ("rect", "square"):
            raise ConfigError(f"letterbox {self.letterbox!r} is not 'rect' or 'square'")

    def _validate_backends(self) -> None:
        from .engine.backends import BACKENDS, PRECISIONS

        if self.backend not in ("auto", *BACKENDS):
            raise ConfigError(f"backend {self.backend!r} is not one of auto, {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for provider in self.providers:
            if not provider.endswith("ExecutionProvider"):
                raise ConfigError(f"provider {provider!r} is not an onnxruntime execution provider name "
                                  "(like CUDAExecutionProvider)")
        if self.providers and self.backend == "openvino":
            raise ConfigError("providers are onnxruntime execution providers; backend is openvino")
        if self.threads < 0:
            raise ConfigError(f"threads {self.threads} must be >= 0")

    def _validate_scheduler(self) -> None:
        for name in ("workers", "max_batch", "predict_queue"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be >= 0")
        if not 0.0 <= self.batch_wait_ms <= 1000.0:
            raise ConfigError(f"batch_wait_ms {self.batch_wait_ms} is not in [0, 1000]")
        if not self.predict_max_wait > 0:
            raise ConfigError(f"predict_max_wait {self.predict_max_wait} must be a positive number of seconds")

    def _validate_pull(self) -> None:
        """Networks parse, timeouts are positive, and every RTC_SOURCES entry is a stream the
        server would accept from ``POST /streams`` (its model is checked once models load;
        host names are checked when they are resolved, at each connection)."""
        # Imported here, not at the top (still downward): ingest's spec brings numpy and cv2,
        # and the container's health check imports this module on every probe.
        from .ingest.policy import SourcePolicy, UrlRefused
        from .ingest.spec import PullSpecError, parse_pull_spec

        for name in ("source_open_timeout", "source_read_timeout", "source_reconnect_max"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be a positive number of seconds")
        for name in ("max_frame_pixels", "source_max_playlist_bytes", "source_max_segments"):
            if not getattr(self, name) >= 1:
                raise ConfigError(f"{name} {getattr(self, name)} must be a positive number")
        try:
            policy = SourcePolicy.of(self.source_allow_networks, self.source_allow_file)
        except ValueError as exc:
            raise ConfigError(f"source_allow_networks: {exc}") from exc
        for index, entry in enumerate(self.sources):
            try:
                policy.parse(parse_pull_spec(entry, None).url)
            except (PullSpecError, UrlRefused) as exc:
                raise ConfigError(f"sources[{index}]: {exc}") from exc

    def _validate_outputs(self) -> None:
        """Webhook URLs pass the pull sources' SSRF rules (scheme, syntax, IP literals; host
        names are checked at each connection), and the numbers are usable."""
        from .ingest.policy import SourcePolicy, UrlRefused  # late, as in _validate_pull

        try:
            policy = SourcePolicy.of(self.webhook_allow_networks)
        except ValueError as exc:
            raise ConfigError(f"webhook_allow_networks: {exc}") from exc
        for index, url in enumerate(self.webhook_urls):
            try:
                policy.parse(url, ("http", "https"))
            except UrlRefused as exc:
                raise ConfigError(f"webhook_urls[{index}]: {exc}") from exc
        if not self.webhook_timeout > 0:
            raise ConfigError(f"webhook_timeout {self.webhook_timeout} must be a positive number of seconds")
        if self.webhook_retries < 0:
            raise ConfigError(f"webhook_retries {self.webhook_retries} must be >= 0")
        if self.webhook_queue < 1:
            raise ConfigError(f"webhook_queue {self.webhook_queue} must be >= 1")
        if self.mqtt_url:
            from .outputs.mqtt import parse_mqtt_url  # late: brings aiomqtt

            try:
                parse_mqtt_url(self.mqtt_url)
            except ValueError as exc:
                raise ConfigError(f"mqtt_url: {exc}") from exc
        if self.mqtt_queue < 1:
            raise ConfigError(f"mqtt_queue {self.mqtt_queue} must be >= 1")
        if self.mqtt_ca is not None and not self.mqtt_ca.is_file():
            raise ConfigError(f"mqtt_ca {self.mqtt_ca} is not a file")

    def _validate_consumers(self) -> None:
        if self.token_secret and len(self.token_secret) < 16:
            raise ConfigError("token_secret is too short: use at least 16 characters (or leave it empty)")
        for name in ("token_ttl", "keepalive"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} {getattr(self, name)} must be a positive number of seconds")
        if self.subscriber_queue < 1:
            raise ConfigError(f"subscriber_queue {self.subscriber_queue} must be >= 1")
        if self.max_subscribers < 0:
            raise ConfigError(f"max_subscribers {self.max_subscribers} must be >= 0")
        if self.snapshot_rate < 0:
            raise ConfigError(f"snapshot_rate {self.snapshot_rate} must be >= 0")
        if not 1 <= self.snapshot_quality <= 100:
            raise ConfigError(f"snapshot_quality {self.snapshot_quality} is not in 1..100")

    def _validate_store(self) -> None:
        """The store's URL is checked by the store itself at start (exit 1, ``StoreConfigError``),
        which knows its drivers; here what needs no database."""
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not 1.0 <= self.lease_seconds <= 3600.0:
            raise ConfigError(f"lease_seconds {self.lease_seconds} is not in [1, 3600]")
        if self.event_retention < 0:
            raise ConfigError(f"event_retention {self.event_retention} must be >= 0 seconds (0: forever)")
        if self.internal_url:
            parsed = urllib.parse.urlsplit(self.internal_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/") \
                    or parsed.query or parsed.username:
                raise ConfigError(f"internal_url {self.internal_url!r} is not like http://10.1.2.3:8080 "
                                  "(scheme, host and port only)")
            if not self.internal_secret:
                raise ConfigError("internal_url is set, so internal_secret is required: the replicas "
                                  "authenticate the internal hop with it")
        if self.internal_secret and len(self.internal_secret) < 16:
            raise ConfigError("internal_secret is too short: use at least 16 characters")


def _parse_model(text: str) -> Path | str:
    """A plain path stays a ``Path``; a URL or a path with ``#options`` stays text (a spec)."""
    text = text.strip()
    return text if "://" in text or "#" in text else Path(text)


def _parse_models(text: str) -> tuple[ModelSpec, ...]:
    try:
        return parse_specs(text)
    except ModelSpecError as exc:
        raise ValueError(str(exc)) from exc


def _default_backend_cache() -> Path:
    return backend_cache_dir()


def _parse_optional_path(text: str) -> Path | None:
    return None if text.strip().lower() in ("", "none", "off") else Path(text)


def _parse_ice_servers(text: str) -> tuple[dict[str, Any], ...]:
    try:
        value = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as exc:
        raise ConfigError(f"RTC_ICE_SERVERS is not JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(s, dict) and "urls" in s for s in value):
        raise ConfigError("RTC_ICE_SERVERS must be a JSON list of objects with 'urls'")
    return tuple(value)


def _parse_udp_ports(text: str) -> tuple[int, int] | None:
    """``"40000-40100"`` -> ``(40000, 40100)`` (inclusive, range checked by Settings); "" -> None."""
    low, sep, high = text.strip().partition("-")
    if not low:
        return None
    try:
        return int(low), int(high if sep else low)
    except ValueError as exc:
        raise ConfigError(f"RTC_UDP_PORTS={text!r} is not a port range like 40000-40100") from exc


def _parse_addresses(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def _parse_sources(text: str) -> tuple[Any, ...]:
    from .ingest.spec import parse_sources  # late, as in _validate_pull

    return parse_sources(text)


#: name -> (converter from text, help). The order is the order of --help.
_OPTIONS: dict[str, tuple[Any, str]] = {
    "host": (str, "address to serve HTTP on"),
    "port": (int, "port to serve HTTP on (PORT is honoured as Cloud Run sets it)"),
    "model": (_parse_model, "YOLO11 ONNX model: a path, https://...#sha256=HEX or gs://...#sha256=HEX"),
    "conf": (float, "confidence threshold"),
    "iou": (float, "NMS IoU threshold"),
    "max_det": (int, "maximum detections per frame"),
    "imgsz": (int, "model input long side (multiple of 32)"),
    "letterbox": (str, "'rect' (minimal padding) or 'square'"),
    "threads": (int, "backend threads per worker: onnxruntime intra-op, OpenVINO inference (0: cores / workers)"),
    "ice_servers": (_parse_ice_servers, "JSON list of RTCIceServer dicts (default: none)"),
    "ice_addresses": (_parse_addresses, "comma-separated local addresses for host candidates"),
    "udp_ports": (_parse_udp_ports, "UDP port range for host candidates, e.g. 40000-40100 (default: any)"),
    "public_address": (str, "address advertised in host candidates instead of the local one (1:1 NAT)"),
    "marker_release": (_parse_bool, "release video frames on the RTP marker bit (on/off)"),
    "static_dir": (Path, "folder of the web page"),
    "log_level": (str, "DEBUG, INFO, WARNING or ERROR"),
    "max_sessions": (int, "live streams at most (0: no cap); beyond it /offer, /whip and POST /streams answer 503"),
    "max_sessions_per_client": (int, "live sessions (/offer + /whip) one client address (IPv6: its /64) may hold "
                                     "(0: no quota); beyond it 429"),
    "max_pulls_per_client": (int, "live pull streams (POST /streams) one client may hold (0: no quota); beyond it 429"),
    "rate_limit": (float, "requests/s per client to each session route: /offer, /whip, POST /streams, "
                          "/sessions (0: off; /predict has its own)"),
    "rate_burst": (int, "requests a client may burst before rate_limit applies"),
    "auth_token": (_parse_addresses, "comma-separated publish tokens required on /offer, /whip, /predict "
                                     "and /ice-servers (none: publishing is public)"),
    "operator_token": (_parse_addresses, "comma-separated operator tokens: GET /sessions, other sessions, "
                                         "/streams (none: closed beyond loopback)"),
    "public_hosts": (_parse_addresses, "comma-separated host[:port] names served besides loopback "
                                       "(others: 421; '*': any, unsafe)"),
    "metrics_auth": (_parse_bool, "true: /metrics needs the operator token too"),
    "cors_origins": (_parse_addresses, "comma-separated origins allowed cross-origin ('*': any)"),
    "max_body_bytes": (int, "largest request body in bytes"),
    "max_image_pixels": (int, "largest /predict image in pixels (checked before decoding)"),
    "connect_timeout": (float, "seconds from offer to connected before a session is reaped"),
    "ice_gather_timeout": (float, "seconds the server may spend gathering ICE candidates"),
    "idle_timeout": (float, "seconds without a video frame before a session is reaped"),
    "ice_allow_networks": (_parse_addresses, "comma-separated CIDRs remote ICE candidates may be in though not "
                           "public (others get no STUN check)"),
    "max_remote_candidates": (int, "remote ICE candidates per session at most (offer and trickle together)"),
    "message_rate": (float, "control messages/s per sender (data channel, each WebSocket subscriber)"),
    "cert": (Path, "TLS certificate (PEM) to serve HTTPS"),
    "key": (Path, "TLS private key (PEM) to serve HTTPS"),
    "log_format": (str, "'text' or 'json' (Cloud Logging fields)"),
    "models": (_parse_models, "several models, the first the default: NAME=SOURCE[#sha256=HEX&imgsz=N],... "
               "or a JSON list (replaces --model)"),
    "model_cache": (Path, "folder for downloaded models (default ~/.cache/rtc-yolo/models)"),
    "model_fetch_timeout": (float, "seconds a model download may stall or retry before start-up fails"),
    "trusted_proxies": (_parse_addresses, "comma-separated CIDRs of proxies whose X-Forwarded-*/Forwarded "
                        "headers are believed"),
    "proxy_header": (str, "the one header the trusted proxies set: X-Forwarded-For (default) or Forwarded"),
    "turn_secret": (str, "TURN REST shared secret (coturn static-auth-secret): short-lived TURN credentials"),
    "turn_urls": (_parse_addresses, "comma-separated turn:/turns: URLs the generated credentials are for"),
    "turn_ttl": (int, "seconds a generated TURN credential stays valid"),
    "drain_seconds": (float, "on SIGTERM, seconds live sessions may go on before they are closed"),
    "metrics_port": (int, "serve /metrics on this port instead of the main one (0: main port)"),
    "predict_rate_limit": (float, "/predict requests/s per client (0: off)"),
    "predict_rate_burst": (int, "/predict requests a client may burst before predict_rate_limit applies"),
    "workers": (int, "concurrent inference calls (0: from backend and cores)"),
    "max_batch": (int, "frames of different streams per inference call at most (0: from backend)"),
    "batch_wait_ms": (float, "ms a ready frame may wait for a batch to fill"),
    "max_fps": (float, "detections/s per stream at most (0: no cap)"),
    "predict_queue": (int, "/predict requests that may wait; beyond it 503 overloaded (0: run only if a "
                            "worker is free now)"),
    "predict_max_wait": (float, "seconds a /predict request may wait before 503 overloaded"),
    "sources": (_parse_sources, "streams to pull from the start: comma-separated URLs or a JSON list"),
    "source_allow_networks": (_parse_addresses, "comma-separated CIDRs pull sources may be in though not public"),
    "source_allow_file": (_parse_bool, "true: pull URLs may be file: (local files)"),
    "source_open_timeout": (float, "seconds a pull source may take to open"),
    "source_read_timeout": (float, "seconds a pull source may go without data before it is reconnected"),
    "source_reconnect_max": (float, "longest backoff in seconds between a pull source's reconnects"),
    "max_frame_pixels": (int, "largest decoded video frame in pixels (default fits 4K, 3840x2160)"),
    "source_max_playlist_bytes": (int, "largest HLS playlist a pull source may load, in bytes"),
    "source_max_segments": (int, "most segments an HLS playlist of a pull source may list"),
    "token_secret": (str, "key signing session tokens for ?token= (default: random per process)"),
    "token_ttl": (float, "seconds a session token stays valid"),
    "subscriber_queue": (int, "messages queued per SSE/WebSocket subscriber (oldest dropped beyond)"),
    "max_subscribers": (int, "SSE + WebSocket subscribers per session at most (0: no cap)"),
    "keepalive": (float, "seconds between keep-alives on SSE/WebSocket subscriptions"),
    "snapshot_rate": (float, "snapshot.jpg encodes per second per session (429 beyond; 0: off)"),
    "snapshot_quality": (int, "JPEG quality of snapshots (1-100)"),
    "webhook_urls": (_parse_addresses, "comma-separated http(s) URLs every stream's events are POSTed to"),
    "webhook_secret": (str, "key of the X-RTC-Signature HMAC-SHA256 of each webhook body (empty: unsigned)"),
    "webhook_allow_networks": (_parse_addresses, "comma-separated CIDRs webhook receivers may be in though "
                                                 "not public"),
    "webhook_timeout": (float, "seconds one webhook POST may take"),
    "webhook_retries": (int, "retries of a webhook POST that failed (backoff from 0.5 s, doubling)"),
    "webhook_queue": (int, "events waiting per webhook receiver (oldest dropped beyond, counted)"),
    "mqtt_url": (str, "MQTT broker for events: mqtt://[user:pass@]host[:port][/prefix] or mqtts://..."),
    "mqtt_detections": (_parse_bool, "true: publish detection messages too (QoS 0, <prefix>/<id>/detections)"),
    "mqtt_queue": (int, "messages waiting for the MQTT broker (oldest dropped beyond, counted)"),
    "mqtt_ca": (_parse_optional_path, "CA certificates (PEM) for an mqtts:// broker with a private CA"),
    "backend": (str, "auto (fastest measured within accuracy bounds), onnxruntime or openvino"),
    "precision": (str, "auto, f32, bf16, f16 or int8"),
    "providers": (_parse_addresses, "comma-separated onnxruntime execution providers, e.g. "
                                    "CUDAExecutionProvider,CPUExecutionProvider (default: CPU)"),
    "data_dir": (Path, "folder of the embedded SQLite store (the image mounts a volume at /data)"),
    "database_url": (str, "postgresql://USER:PASSWORD@HOST:PORT/DB for replicas (empty: SQLite under data_dir)"),
    "lease_seconds": (float, "seconds a pull stream's lease lives unrenewed (a killed owner's failover time)"),
    "internal_url": (str, "where the other replicas reach this one, e.g. http://POD_IP:8080 (empty: one process)"),
    "internal_secret": (str, "shared secret of the internal hop between replicas (required with internal_url)"),
    "event_retention": (float, "seconds of event history kept (0: forever)"),
    "backend_cache": (_parse_optional_path, "folder caching auto's choice and compiled models "
                                            "(default ~/.cache/rtc-yolo/backends; 'none': no cache)"),
}


def env_name(name: str) -> str:
    return "RTC_" + name.upper()


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``argv`` (flags) over ``env`` (``RTC_*`` variables) over defaults."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="rtc-server",
        description="Real-time YOLO11 object detection over WebRTC.",
    )
    for name, (_, help_text) in _OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{help_text} [env {env_name(name)}]",
        )
    args = parser.parse_args(argv)

    values: dict[str, Any] = {}
    if env.get("PORT"):
        values["port"] = env["PORT"]
    for name in _OPTIONS:
        if env.get(env_name(name)):
            values[name] = env[env_name(name)]
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return settings_from_text(values)


def settings_from_text(values: Mapping[str, Any]) -> Settings:
    """Convert textual values (from flags or env) and validate them."""
    known = {f.name for f in fields(Settings)}
    converted: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        convert = _OPTIONS[name][0]
        try:
            converted[name] = convert(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise ConfigError(f"{env_name(name)}={raw!r}: {exc}") from exc
    return Settings(**converted)
