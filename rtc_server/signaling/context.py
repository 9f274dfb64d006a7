"""What the routes get from the composition root: typed ``AppKey``s, each set by the root
(``rtc_server/app.py``) before ``setup_routes`` runs, and ``ApiConfig``, the HTTP face's
own settings.

The HTTP face reads no ``Settings``: the root maps the ``RTC_*`` settings it needs into
``ApiConfig`` (``rtc_server/wiring.py``) and builds every shared object — the scheduler,
the stream registry, the rate limits, the session tokens, the snapshot encoder — so a
handler only calls what it was handed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from rtc_server.engine.images import ImageChecks
from rtc_server.engine.scheduler import Scheduler
from rtc_server.engine.yolo import Thresholds
from rtc_server.ingest.source import PullConfig
from rtc_server.streams.registry import StreamRegistry
from rtc_server.streams.sinks import Subscriber
from rtc_server.streams.snapshot import Snapshots
from rtc_server.webrtc.peer import PeerConfig

from .limits import RateLimits
from .quotas import ClientQuotas
from .tokens import SessionTokens


@dataclass(frozen=True)
class ApiConfig:
    """The HTTP face's settings (each the ``RTC_*`` setting of the same name, unless said)."""

    #: The page's folder (``/`` and ``/static/...``).
    static_dir: Path
    #: The publish right's bearer tokens (``RTC_AUTH_TOKEN``): ``/offer``, ``/whip``,
    #: ``/predict``, ``/ice-servers``; empty: publishing is public (``auth.py``).
    auth_token: tuple[str, ...] = field(default=(), repr=False)
    #: The operate right's bearer tokens (``RTC_OPERATOR_TOKEN``): the sessions list, other
    #: sessions, ``/streams``; empty: operating is closed unless ``loopback_only``.
    operator_token: tuple[str, ...] = field(default=(), repr=False)
    #: The server listens on loopback only (``RTC_HOST`` 127.0.0.1, ::1, localhost): with no
    #: operator token, operating follows the publish rule (one machine, one user).
    loopback_only: bool = True
    #: Whether ``/metrics`` needs the operate right too.
    metrics_auth: bool = False
    #: ``RTC_METRICS_PORT`` set: ``/metrics`` is served by an app of its own (``METRICS_APP``).
    separate_metrics: bool = False
    #: Largest ``/predict`` body in bytes, and image in pixels (read before decoding).
    max_body_bytes: int = 16 * 1024 * 1024
    max_image_pixels: int = 25_000_000
    #: The thresholds ``/predict`` applies (``RTC_CONF``, ``RTC_IOU``, ``RTC_MAX_DET``).
    thresholds: Thresholds = field(default_factory=Thresholds)
    #: Seconds between keep-alives on a subscription (SSE comment, WebSocket ping).
    keepalive: float = 15.0
    #: Messages queued per subscriber (oldest dropped beyond).
    subscriber_queue: int = 32
    #: Subscribers per session at most (0: no cap).
    max_subscribers: int = 16
    #: Snapshots per second per session (0: snapshots are off: 404).
    snapshot_rate: float = 4.0
    #: How ``/offer`` and ``/whip`` build a peer (its limits and ICE); ``/ice-servers``
    #: hands out its ICE servers.
    peer: PeerConfig = field(default_factory=PeerConfig)
    #: How ``/streams`` opens a pulled URL (the SSRF policy, timeouts).
    pull: PullConfig = field(default_factory=PullConfig)


API: web.AppKey[ApiConfig] = web.AppKey("api", ApiConfig)
#: The process's one ``Scheduler`` (the door to the models; kept under its old key name).
INFERENCE: web.AppKey[Scheduler] = web.AppKey("inference", Scheduler)
REGISTRY: web.AppKey[StreamRegistry] = web.AppKey("registry", StreamRegistry)
#: ``/predict``'s image checks: off the loop for large bodies, a bounded number at once.
IMAGE_CHECKS: web.AppKey[ImageChecks] = web.AppKey("image_checks", ImageChecks)
RATE_LIMITS: web.AppKey[RateLimits] = web.AppKey("rate_limits", RateLimits)
#: What one client may hold at once: live sessions, pulls (``quotas.py``).
QUOTAS: web.AppKey[ClientQuotas] = web.AppKey("quotas", ClientQuotas)
# ----- consumers (issue 13) -----
TOKENS: web.AppKey[SessionTokens] = web.AppKey("session_tokens", SessionTokens)
SNAPSHOTS: web.AppKey[Snapshots] = web.AppKey("snapshots", Snapshots)
#: Every subscription being served, including one whose stream has closed and which is
#: still handing out its last messages; shutdown ends them all.
SUBSCRIPTIONS: web.AppKey[set[Subscriber]] = web.AppKey("subscriptions", set)
