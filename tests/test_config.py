"""Settings from flags, RTC_* variables and Cloud Run's PORT."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtc_server.config import ConfigError, load_settings


def test_defaults_never_contact_stun_and_serve_loopback() -> None:
    s = load_settings([], env={})
    assert s.ice_servers == () and s.ice_addresses == ()
    assert (s.host, s.port, s.model) == ("127.0.0.1", 8080, Path("models/yolo11n.onnx"))


def test_flag_beats_env_beats_port() -> None:
    assert load_settings([], env={"PORT": "9000"}).port == 9000
    assert load_settings([], env={"PORT": "9000", "RTC_PORT": "9001"}).port == 9001
    assert load_settings(["--port", "9002"], env={"PORT": "9000", "RTC_PORT": "9001"}).port == 9002


def test_env_values_are_parsed() -> None:
    s = load_settings([], env={
        "RTC_ICE_SERVERS": '[{"urls": "turn:turn.example.com:443", "username": "u", "credential": "p"}]',
        "RTC_ICE_ADDRESSES": "127.0.0.1, ::1",
        "RTC_MODEL": "/m/x.onnx", "RTC_CONF": "0.4", "RTC_LETTERBOX": "square",
    })
    assert s.ice_servers[0]["urls"] == "turn:turn.example.com:443"
    assert s.ice_addresses == ("127.0.0.1", "::1")
    assert (s.model, s.conf, s.letterbox) == (Path("/m/x.onnx"), 0.4, "square")


@pytest.mark.parametrize("env", [
    {"RTC_PORT": "0"}, {"RTC_PORT": "http"}, {"RTC_CONF": "2"}, {"RTC_IMGSZ": "600"},
    {"RTC_LETTERBOX": "wide"}, {"RTC_ICE_SERVERS": "stun:x"}, {"RTC_ICE_SERVERS": '[{"url": "x"}]'},
])
def test_bad_values_are_refused_with_a_reason(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings([], env=env)


def test_scheduler_settings_from_env() -> None:
    s = load_settings([], env={"RTC_WORKERS": "2", "RTC_MAX_BATCH": "8", "RTC_BATCH_WAIT_MS": "4",
                               "RTC_MAX_FPS": "10", "RTC_PREDICT_QUEUE": "16", "RTC_PREDICT_MAX_WAIT": "0.5"})
    assert (s.workers, s.max_batch, s.batch_wait_ms, s.max_fps, s.predict_queue, s.predict_max_wait) == (
        2, 8, 4.0, 10.0, 16, 0.5)
    d = load_settings([], env={})
    assert (d.workers, d.max_batch, d.batch_wait_ms, d.max_fps) == (0, 0, 0.0, 0.0)  # 0: chosen / off


@pytest.mark.parametrize("env", [
    {"RTC_WORKERS": "-1"}, {"RTC_MAX_BATCH": "-2"}, {"RTC_BATCH_WAIT_MS": "-1"}, {"RTC_BATCH_WAIT_MS": "5000"},
    {"RTC_MAX_FPS": "-3"}, {"RTC_MAX_FPS": "1000"}, {"RTC_PREDICT_QUEUE": "-1"}, {"RTC_PREDICT_MAX_WAIT": "0"},
])
def test_bad_scheduler_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings([], env=env)
