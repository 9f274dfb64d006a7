"""The hardening settings: parsed from env/flags, validated, secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtc_server.config import ConfigError, load_settings


def test_hardening_settings_from_env_and_flags(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    s = load_settings(["--max-sessions", "3", "--cert", str(cert), "--key", str(key)], {
        "RTC_AUTH_TOKEN": "s3cret-alpha, s3cret-beta", "RTC_METRICS_AUTH": "true", "RTC_CORS_ORIGINS": "https://a.example,*",
        "RTC_RATE_LIMIT": "2.5", "RTC_RATE_BURST": "4", "RTC_CONNECT_TIMEOUT": "5", "RTC_IDLE_TIMEOUT": "9",
        "RTC_ICE_GATHER_TIMEOUT": "3", "RTC_MESSAGE_RATE": "7", "RTC_MAX_IMAGE_PIXELS": "1000000",
        "RTC_MAX_BODY_BYTES": "2048", "RTC_LOG_FORMAT": "json", "RTC_MAX_SESSIONS": "99",
    })
    assert s.max_sessions == 3  # the flag wins over the variable
    assert s.auth_token == ("s3cret-alpha", "s3cret-beta") and s.metrics_auth is True
    assert s.cors_origins == ("https://a.example", "*")
    assert (s.rate_limit, s.rate_burst, s.message_rate) == (2.5, 4, 7.0)
    assert (s.connect_timeout, s.idle_timeout, s.ice_gather_timeout) == (5.0, 9.0, 3.0)
    assert (s.max_image_pixels, s.max_body_bytes, s.log_format) == (1_000_000, 2048, "json")
    assert (s.cert, s.key) == (cert, key)
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize("env,message", [
    ({"RTC_MAX_SESSIONS": "-1"}, "max_sessions"),
    ({"RTC_RATE_LIMIT": "-1"}, "rate_limit"),
    ({"RTC_RATE_BURST": "0"}, "rate_burst"),
    ({"RTC_CONNECT_TIMEOUT": "0"}, "connect_timeout"),
    ({"RTC_IDLE_TIMEOUT": "-3"}, "idle_timeout"),
    ({"RTC_MAX_IMAGE_PIXELS": "0"}, "max_image_pixels"),
    ({"RTC_METRICS_AUTH": "maybe"}, "boolean"),
    ({"RTC_LOG_FORMAT": "xml"}, "log_format"),
    ({"RTC_CERT": "/nonexistent.pem"}, "cert and key go together"),
    ({"RTC_CERT": "/nonexistent.pem", "RTC_KEY": "/nonexistent.key"}, "not found"),
    ({"RTC_AUTH_TOKEN": ","}, None),  # only separators: no token, i.e. auth off
])
def test_bad_hardening_settings_are_refused(env: dict[str, str], message: str | None) -> None:
    if message is None:
        assert load_settings([], env).auth_token == ()
        return
    with pytest.raises(ConfigError, match=message):
        load_settings([], env)
