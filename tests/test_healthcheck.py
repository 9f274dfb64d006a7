"""``python -m rtc_server.healthcheck`` (the image's HEALTHCHECK) against a real server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from aiohttp import web

from rtc_server.healthcheck import main, probe_url


def test_probe_url_follows_the_server_settings() -> None:
    assert probe_url({}) == "http://127.0.0.1:8080/healthz"
    assert probe_url({"PORT": "9000", "RTC_HOST": "0.0.0.0"}) == "http://127.0.0.1:9000/healthz"
    assert probe_url({"PORT": "9000", "RTC_PORT": "9100", "RTC_HOST": "::"}) == "http://[::1]:9100/healthz"


async def test_healthy_server_and_missing_server(
    aiohttp_server: Callable[..., asyncio.Future[object]], make_app: Callable[..., web.Application]
) -> None:
    server = await aiohttp_server(make_app(), host="127.0.0.1")
    port = server.port  # type: ignore[attr-defined]
    env = {"PORT": str(port), "RTC_HOST": "0.0.0.0"}
    assert await asyncio.to_thread(main, [], env) == 0
    assert await asyncio.to_thread(main, ["/nope"], env) == 1  # 404: not healthy
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert await asyncio.to_thread(main, [], {"PORT": str(closed)}) == 1
    assert await asyncio.to_thread(main, [], {"PORT": "0"}) == 1  # bad config: unhealthy, no crash
