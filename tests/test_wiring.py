"""The composition root's mapping: each component's own config carries the ``RTC_*``
settings it is named after, so no component needs ``Settings`` to get them."""

from __future__ import annotations

from pathlib import Path

from rtc_server import wiring
from rtc_server.config import Settings
from rtc_server.engine.yolo import Thresholds


def test_each_component_config_carries_its_settings(tmp_path: Path) -> None:
    settings = Settings(
        static_dir=tmp_path, auth_token=("t0k3n",), metrics_auth=True, metrics_port=9091, max_body_bytes=1234,
        max_image_pixels=5678, conf=0.4, iou=0.6, max_det=7, keepalive=3.0, subscriber_queue=5, max_subscribers=2,
        snapshot_rate=1.5, connect_timeout=4.0, idle_timeout=6.0, ice_gather_timeout=2.5,
        ice_addresses=("127.0.0.1",), public_address="203.0.113.7", ice_servers=({"urls": "stun:s:3478"},),
        turn_secret="s3cret", turn_urls=("turn:t:3478",), turn_ttl=99, source_allow_networks=("10.0.0.0/8",),
        source_allow_file=True, source_open_timeout=1.5, source_read_timeout=2.5, source_reconnect_max=9.0,
        rate_limit=2.0, rate_burst=3, predict_rate_limit=8.0, predict_rate_burst=9, message_rate=11.0, max_fps=12.0)
    api = wiring.api_config(settings)
    assert (api.static_dir, api.auth_token) == (tmp_path, ("t0k3n",))
    assert api.metrics_auth and api.separate_metrics
    assert (api.max_body_bytes, api.max_image_pixels, api.thresholds) == (1234, 5678, Thresholds(0.4, 0.6, 7))
    assert (api.keepalive, api.subscriber_queue, api.max_subscribers, api.snapshot_rate) == (3.0, 5, 2, 1.5)
    assert api.peer == wiring.peer_config(settings) and api.pull == wiring.pull_config(settings)
    peer = api.peer
    assert (peer.limits.connect_timeout, peer.limits.idle_timeout, peer.ice_gather_timeout) == (4.0, 6.0, 2.5)
    assert (peer.ice_addresses, peer.public_address) == (("127.0.0.1",), "203.0.113.7")
    ice = peer.ice_servers
    assert (ice.static, ice.turn_secret, ice.turn_urls, ice.turn_ttl) == (
        ({"urls": "stun:s:3478"},), "s3cret", ("turn:t:3478",), 99)
    assert "s3cret" not in repr(api) and "t0k3n" not in repr(api)  # secrets stay out of logs
    pull = api.pull
    assert pull.policy.allow_file and [str(n) for n in pull.policy.allow_networks] == ["10.0.0.0/8"]
    assert (pull.limits.open_timeout, pull.limits.read_timeout, pull.limits.reconnect_max) == (1.5, 2.5, 9.0)
    assert (wiring.session_rate_limit(settings).rate, wiring.session_rate_limit(settings).burst) == (2.0, 3)
    assert (wiring.predict_rate_limit(settings).rate, wiring.predict_rate_limit(settings).burst) == (8.0, 9)
    assert (wiring.stream_limits(settings).message_rate, wiring.stream_limits(settings).max_fps) == (11.0, 12.0)
    assert wiring.stream_limits(Settings()).max_fps is None  # 0: no cap
    assert not wiring.api_config(Settings()).separate_metrics
