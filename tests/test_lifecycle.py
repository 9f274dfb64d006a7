"""Rolling updates and capacity, with the real server process and real aiortc peers:
SIGTERM drains (new offers 503 ``draining``, readiness 503, live sessions go on) for up to
RTC_DRAIN_SECONDS, then closes what is left through the normal path; ``/readyz?capacity=1``
says ``full`` at RTC_MAX_SESSIONS; RTC_METRICS_PORT moves ``/metrics`` off the public port."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.signaling.context import REGISTRY

from .helpers import FIXTURES, ServerFactory, ServerProcess, free_port, http_get, parse_metrics, serve, wait_for
from .sdp import make_offer

pytestmark = pytest.mark.slow


def json_log(server: ServerProcess) -> list[dict]:
    return [json.loads(line) for line in server.log.splitlines() if line.startswith("{")]


def messages(server: ServerProcess) -> list[str]:
    return [str(entry["message"]) for entry in json_log(server)]


async def post_offer(url: str) -> tuple[int, dict, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.post(
        f"{url}/offer", json={"sdp": await make_offer(), "type": "offer"}
    ) as response:
        return response.status, await response.json(), dict(response.headers)


async def wait_status(url: str, path: str, status: int) -> dict:
    async with asyncio.timeout(20):
        while True:
            got, body = await asyncio.to_thread(http_get, url + path)
            if got == status:
                return json.loads(body)
            await asyncio.sleep(0.1)


async def test_sigterm_drains_new_offers_refused_live_session_goes_on_and_ends_the_wait(
    tmp_path: Path, model_file: Path, bus_frame: np.ndarray
) -> None:
    server = ServerProcess(tmp_path / "server.log", {"RTC_MODEL": str(model_file), "RTC_LOG_FORMAT": "json",
                                                     "RTC_DRAIN_SECONDS": "120"}).start()
    client = DetectionClient(server.url, ImageTrack(bus_frame, fps=15))
    try:
        await client.connect()
        await client.next_message()
        server.signal(signal.SIGTERM)
        ready = await wait_status(server.url, "/readyz", 503)
        assert ready["status"] == "draining" and ready["sessions"] == 1
        status, body, headers = await post_offer(server.url)
        assert status == 503 and body["error"] == "draining" and int(headers["Retry-After"]) >= 1
        # HTTP goes on during the drain, and so does the live session.
        jpeg = (FIXTURES / "bus.jpg").read_bytes()
        async with aiohttp.ClientSession() as http, http.post(
            f"{server.url}/predict", data=jpeg, headers={"Content-Type": "image/jpeg"}
        ) as response:
            assert response.status == 200
        assert {"bus", "person"} <= {d["label"] for d in (await client.next_message())["detections"]}
        assert server.proc is not None and server.proc.poll() is None, "still serving the live session"
    finally:
        await client.close()  # the last session ends on its own: the drain is over
    # Far less than the 120 s drain: the server does not wait once no session is left.
    assert await asyncio.to_thread(server.wait, 60) == 0, server.log
    said = messages(server)
    closed = [m for m in said if m.startswith("closed: ")]
    assert closed and not any("closed by server" in m for m in closed), said  # ended by the peer, not by us
    assert not any(m.startswith("drained:") for m in said), said
    assert "exited cleanly" in said


async def test_drain_deadline_closes_the_rest_through_the_normal_path(
    tmp_path: Path, model_file: Path, bus_frame: np.ndarray
) -> None:
    server = ServerProcess(tmp_path / "server.log", {"RTC_MODEL": str(model_file), "RTC_LOG_FORMAT": "json",
                                                     "RTC_DRAIN_SECONDS": "2"}).start()
    client = DetectionClient(server.url, ImageTrack(bus_frame, fps=15))
    try:
        await client.connect()
        await client.next_message()
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 60) == 0, server.log
        await wait_for(lambda: client.channel.readyState == "closed", timeout=20)
    finally:
        await client.close()
    said = messages(server)
    assert any(m.startswith("drained: 1 sessions still live") for m in said), said
    closed = [e for e in json_log(server) if str(e["message"]).startswith("closed: closed by server")]
    assert [e["session_id"] for e in closed] == [client.session_id], said


async def test_a_second_signal_ends_the_drain_at_once(tmp_path: Path, model_file: Path, bus_frame: np.ndarray) -> None:
    server = ServerProcess(tmp_path / "server.log", {"RTC_MODEL": str(model_file), "RTC_LOG_FORMAT": "json",
                                                     "RTC_DRAIN_SECONDS": "600"}).start()
    client = DetectionClient(server.url, ImageTrack(bus_frame, fps=15))
    try:
        await client.connect()
        await client.next_message()
        server.signal(signal.SIGTERM)
        await wait_status(server.url, "/readyz", 503)
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 60) == 0, server.log
    finally:
        await client.close()
    said = messages(server)
    assert "second signal: ending the drain now" in said and any(m.startswith("closed: closed by server")
                                                                 for m in said), said


async def test_readiness_with_capacity_says_full_at_max_sessions(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    """New offers should go to pods with a free slot; /readyz keeps its meaning (can serve)."""
    app = stub_app(max_sessions=1)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        async def ready(path: str) -> tuple[int, dict]:
            async with http.get(url + path) as response:
                return response.status, await response.json()

        assert (await ready("/readyz?capacity=1"))[0] == 200
        async with DetectionClient(url, ImageTrack(bus_frame, fps=15)):
            status, body = await ready("/readyz?capacity=1")
            assert status == 503 and (body["status"], body["sessions"], body["max_sessions"]) == ("full", 1, 1)
            assert (await ready("/readyz"))[0] == 200  # the process itself is fine
        await wait_for(lambda: len(app[REGISTRY]) == 0)
        assert (await ready("/readyz?capacity=1"))[0] == 200


async def test_metrics_port_keeps_metrics_off_the_public_port(
    tmp_path: Path, model_file: Path, bus_frame: np.ndarray
) -> None:
    metrics_port = free_port()
    server = ServerProcess(tmp_path / "server.log", {"RTC_MODEL": str(model_file),
                                                     "RTC_METRICS_PORT": str(metrics_port)}).start()
    try:
        status, body = server.get("/metrics", ok_only=False)
        assert status == 404 and json.loads(body)["error"] == "not_found"
        async with DetectionClient(server.url, ImageTrack(bus_frame, fps=15)) as client:
            await client.next_message()
            samples = parse_metrics(server.get("/metrics", port=metrics_port)[1])
        assert samples["rtc_sessions_active"] == 1 and samples["rtc_frames_processed_total"] >= 1
        assert server.get("/healthz")[0] == 200
    finally:
        server.stop()
