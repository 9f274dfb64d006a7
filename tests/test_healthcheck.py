"""``python -m rtc_server.healthcheck`` (the image's HEALTHCHECK) against a real server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from rtc_server.healthcheck import main, probe_url

from .helpers import ServerProcess, self_signed


def test_probe_url_follows_the_server_settings() -> None:
    assert probe_url({}) == "http://127.0.0.1:8080/healthz"
    assert probe_url({"PORT": "9000", "RTC_HOST": "0.0.0.0"}) == "http://127.0.0.1:9000/healthz"
    assert probe_url({"PORT": "9000", "RTC_PORT": "9100", "RTC_HOST": "::"}) == "http://[::1]:9100/healthz"


def test_healthcheck_speaks_https_to_a_server_with_a_certificate(tmp_path: Path, model_file: Path) -> None:
    """The image's HEALTHCHECK with RTC_CERT: HTTPS, and the self-signed certificate is fine
    (the probe talks to its own server over loopback)."""
    cert, key = self_signed(tmp_path)
    env = {"RTC_CERT": str(cert), "RTC_KEY": str(key), "RTC_MODEL": str(model_file)}
    server = ServerProcess(tmp_path / "server.log", env).start()
    try:
        probe_env = {**env, "RTC_PORT": str(server.port), "RTC_HOST": "0.0.0.0"}
        assert probe_url(probe_env).startswith("https://127.0.0.1:")
        assert main([], probe_env) == 0
        assert main(["/readyz"], probe_env) == 0
    finally:
        server.stop()


async def test_healthy_server_and_missing_server(
    aiohttp_server: Callable[..., asyncio.Future[object]], stub_app: Callable[..., web.Application]
) -> None:
    server = await aiohttp_server(stub_app(), host="127.0.0.1")
    port = server.port  # type: ignore[attr-defined]
    env = {"PORT": str(port), "RTC_HOST": "0.0.0.0"}
    assert await asyncio.to_thread(main, [], env) == 0
    assert await asyncio.to_thread(main, ["/nope"], env) == 1  # 404: not healthy
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert await asyncio.to_thread(main, [], {"PORT": str(closed)}) == 1
    assert await asyncio.to_thread(main, [], {"PORT": "0"}) == 1  # bad config: unhealthy, no crash
