"""Settings -> each component's own small config: the composition root's half that maps.

Components never see ``Settings``: each declares the few values it needs as a frozen
dataclass of its own (``PeerConfig``, ``PullConfig``, ``StreamLimits``, ``ApiConfig``,
...) and this module, with ``app.py`` the composition root, is where the ``RTC_*``
settings are mapped onto them. One function per component config, nothing else: no
object with a lifetime is built here (``app.py`` does that), so every mapping can be read
— and tested — on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
from urllib.parse import urlsplit

from .addresses import AddressPolicy
from .cluster.leases import LeaseConfig
from .config import ConfigError, Settings
from .engine.yolo import Thresholds
from .ingest.limits import InputCaps
from .ingest.policy import SourcePolicy
from .ingest.source import PullConfig, PullLimits
from .outputs.mqtt import MqttConfig
from .outputs.webhooks import WebhookConfig, WebhookTarget
from .signaling.auth import is_loopback_host
from .signaling.context import ApiConfig
from .signaling.hosts import HostPolicy
from .signaling.limits import RateLimit
from .signaling.quotas import QuotaLimits
from .store import StoreConfig
from .streams.control import StreamSettings
from .streams.stream import StreamLimits
from .webrtc.peer import PeerConfig, PeerLimits
from .webrtc.turn import IceServerConfig


def thresholds(settings: Settings) -> Thresholds:
    """The server's thresholds: what a new stream and every ``/predict`` start with."""
    return Thresholds(conf=settings.conf, iou=settings.iou, max_det=settings.max_det)


def stream_defaults(settings: Settings) -> StreamSettings:
    """The settings a new stream starts with: the server's thresholds, the default model."""
    return StreamSettings(thresholds(settings))


def webhook_config(settings: Settings) -> WebhookConfig:
    return WebhookConfig(timeout=settings.webhook_timeout, retries=settings.webhook_retries,
                         queue=settings.webhook_queue, allow_networks=settings.webhook_allow_networks)


def webhook_targets(settings: Settings) -> tuple[WebhookTarget, ...]:
    """``RTC_WEBHOOK_URLS``, each signed with ``RTC_WEBHOOK_SECRET`` (if set)."""
    return tuple(WebhookTarget(url, settings.webhook_secret or None) for url in settings.webhook_urls)


def mqtt_config(settings: Settings) -> MqttConfig:
    return MqttConfig(detections=settings.mqtt_detections, queue=settings.mqtt_queue, ca_file=settings.mqtt_ca)


def stream_limits(settings: Settings) -> StreamLimits:
    return StreamLimits(message_rate=settings.message_rate, max_fps=settings.max_fps or None,
                        max_frame_pixels=settings.max_frame_pixels)


def ice_server_config(settings: Settings) -> IceServerConfig:
    return IceServerConfig(static=settings.ice_servers, turn_secret=settings.turn_secret,
                           turn_urls=settings.turn_urls, turn_ttl=settings.turn_ttl)


def peer_config(settings: Settings) -> PeerConfig:
    return PeerConfig(
        limits=PeerLimits(connect_timeout=settings.connect_timeout, idle_timeout=settings.idle_timeout),
        ice_gather_timeout=settings.ice_gather_timeout, ice_addresses=settings.ice_addresses,
        public_address=settings.public_address, ice_servers=ice_server_config(settings),
        candidate_policy=AddressPolicy.of(settings.ice_allow_networks),
        max_remote_candidates=settings.max_remote_candidates, trust_local_candidates=loopback_only(settings))


def pull_config(settings: Settings) -> PullConfig:
    return PullConfig(
        policy=SourcePolicy.of(settings.source_allow_networks, settings.source_allow_file),
        limits=PullLimits(open_timeout=settings.source_open_timeout, read_timeout=settings.source_read_timeout,
                          reconnect_max=settings.source_reconnect_max,
                          caps=InputCaps(max_frame_pixels=settings.max_frame_pixels,
                                         max_playlist_bytes=settings.source_max_playlist_bytes,
                                         max_segments=settings.source_max_segments)))


def session_rate_limit(settings: Settings) -> RateLimit:
    """Every rate-limited route but ``/predict``: ``/offer``, ``/whip``, ``/streams``, ``/sessions``."""
    return RateLimit(settings.rate_limit, settings.rate_burst)


def predict_rate_limit(settings: Settings) -> RateLimit:
    return RateLimit(settings.predict_rate_limit, settings.predict_rate_burst)


def host_policy(settings: Settings) -> HostPolicy:
    """The ``Host`` names served: loopback plus ``RTC_PUBLIC_HOSTS`` (``ConfigError``, exit 2,
    for an entry that is not ``host[:port]``), plus this replica's own ``RTC_INTERNAL_URL``
    host, which the other replicas name when they forward a request here."""
    internal = urlsplit(settings.internal_url).netloc if settings.internal_url else ""
    try:
        return HostPolicy.of((*settings.public_hosts, *((internal,) if internal else ())))
    except ValueError as exc:
        raise ConfigError(f"public_hosts: {exc}") from exc


def loopback_only(settings: Settings) -> bool:
    """Whether only this machine's own users reach the server: it listens on loopback, and
    no proxy forwards to it (``RTC_TRUSTED_PROXIES``) nor is it named publicly
    (``RTC_PUBLIC_HOSTS``) — behind Caddy on loopback the world is one hop away. Only then
    may the operator API go without ``RTC_OPERATOR_TOKEN``."""
    return is_loopback_host(settings.host) and not settings.trusted_proxies and not settings.public_hosts


def quota_limits(settings: Settings) -> QuotaLimits:
    """What one client (address, IPv6 /64) may hold at once."""
    return QuotaLimits(sessions=settings.max_sessions_per_client, pulls=settings.max_pulls_per_client)


def api_config(settings: Settings) -> ApiConfig:
    return ApiConfig(
        static_dir=settings.static_dir, auth_token=settings.auth_token, operator_token=settings.operator_token,
        loopback_only=loopback_only(settings), metrics_auth=settings.metrics_auth,
        separate_metrics=bool(settings.metrics_port), max_body_bytes=settings.max_body_bytes,
        max_image_pixels=settings.max_image_pixels, thresholds=thresholds(settings), keepalive=settings.keepalive,
        subscriber_queue=settings.subscriber_queue, max_subscribers=settings.max_subscribers,
        snapshot_rate=settings.snapshot_rate, peer=peer_config(settings), pull=pull_config(settings))


def store_config(settings: Settings) -> StoreConfig:
    """``RTC_DATABASE_URL``, else the embedded SQLite file under ``RTC_DATA_DIR``."""
    if settings.database_url:
        return StoreConfig(url=settings.database_url)
    return StoreConfig.for_data_dir(settings.data_dir)


#: Pull streams a replica takes when ``max_sessions`` is 0 (no cap).
UNCAPPED_STREAMS = 10_000


def replica_id(settings: Settings) -> str:
    """This replica's name in the lease protocol: its internal URL (unique among live
    replicas), else host name and port — stable across restarts of one process, so that a
    restart takes back its own unexpired leases at once."""
    return settings.internal_url or f"{socket.gethostname()}:{settings.port}"


def lease_config(settings: Settings) -> LeaseConfig:
    return LeaseConfig(replica_id=replica_id(settings), capacity=settings.max_sessions or UNCAPPED_STREAMS,
                       lease_seconds=settings.lease_seconds, internal_url=settings.internal_url or None)


def token_secret(settings: Settings) -> str:
    """The key of session tokens: ``RTC_TOKEN_SECRET``; else, with replicas, one derived from
    ``RTC_INTERNAL_SECRET`` (a token any replica issued opens the session on every replica);
    else empty (a random key per process)."""
    if settings.token_secret or not settings.internal_secret:
        return settings.token_secret
    return hmac.new(settings.internal_secret.encode(), b"rtc-yolo session tokens", hashlib.sha256).hexdigest()
