"""FFmpeg's WHIP muxer (inside the PyAV wheel) against the real server.

FFmpeg offers H.264 with ``a=setup:passive`` (we are the DTLS client) and no ICE
candidate at all: the server learns its address from its connectivity checks. It is run
by ``drivers/ffmpeg_whip.py`` in a process of its own (its network I/O holds the GIL).

PyAV's FFmpeg is built with GnuTLS, which makes its default DTLS certificate on P-224; the
OpenSSL in the ``cryptography`` wheel cannot accept a P-224 peer in (D)TLS at all
(``rtc_server/webrtc/dtls.py``, docs/whip.md). A standard FFmpeg 8 build (OpenSSL backend)
makes a P-256 one: ``cert_file``/``key_file`` with a P-256 certificate emulates it, and
that session must work end to end. With the default certificate the session cannot work
and the server must say why.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from aiohttp import web

from drivers.ffmpeg_whip import write_certificate
from drivers.sinks import CollectingSink
from rtc_server.signaling.context import REGISTRY
from rtc_server.webrtc import dtls

from .helpers import FIXTURES, ROOT, ServerFactory, cannot_run, open_udp_sockets, serve, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _whip_muxer() -> None:
    if "whip" not in av.formats_available:
        cannot_run(f"PyAV {av.__version__}'s FFmpeg has no WHIP muxer (FFmpeg 8 / PyAV 16+ have it)")

FPS = 30
TICKS_PER_FRAME = 90_000 // FPS


async def start_ffmpeg(url: str, seconds: float, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "drivers.ffmpeg_whip", f"{url}/whip", "--image", str(FIXTURES / "bus.jpg"),
        "--fps", str(FPS), "--seconds", str(seconds), *extra, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def events_of(process: asyncio.subprocess.Process) -> tuple[list[dict[str, Any]], str]:
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")], stderr.decode()


async def test_ffmpeg_whip_muxer_with_a_p256_certificate_gets_detections(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], tmp_path: Path
) -> None:
    cert_file, key_file = write_certificate(tmp_path)
    app = make_app()
    url = await serve(aiohttp_server, app)
    udp_before = open_udp_sockets()
    ffmpeg = await start_ffmpeg(url, 6, "--cert-file", str(cert_file), "--key-file", str(key_file))
    sink = CollectingSink()
    try:
        await wait_for(lambda: any(s.source_kind == "whip" for s in app[REGISTRY]) or ffmpeg.returncode is not None,
                       30)
        stream = next(s for s in app[REGISTRY] if s.source_kind == "whip")
        stream.add_sink(sink)
        messages = await sink.wait_for(5, timeout=30)
    finally:
        events, stderr = await events_of(ffmpeg)
    assert ffmpeg.returncode == 0, (events, stderr[-2000:])
    assert [e["event"] for e in events] == ["start", "connected", "closed"]
    labels = {d["label"] for _, m in messages for d in m["detections"]}
    assert {"bus", "person"} <= labels, labels
    assert all((m["width"], m["height"]) == (640, 480) for _, m in messages)
    # frame index <-> pts: the bench matches each detection to its frame by this
    assert all(m["pts"] % TICKS_PER_FRAME == 0 for _, m in messages), [m["pts"] for _, m in messages]
    assert dtls.PEER_KEYS["EC secp256r1"] >= 1
    # FFmpeg DELETEd its session on close: gone, sockets closed
    await wait_for(lambda: len(app[REGISTRY]) == 0)
    assert stream.close_reason == "whip delete" and sink.closed
    assert not open_udp_sockets() - udp_before


async def test_ffmpeg_default_certificate_cannot_work_and_the_server_says_why(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    """PyAV's FFmpeg (GnuTLS) makes a P-224 certificate; OpenSSL 4 (the cryptography wheel's)
    has P-224 compiled out of TLS, so no setting on our side can accept it. If this test
    starts failing because the session works, the DTLS stack changed: update docs/whip.md."""
    caplog.set_level("WARNING", logger="rtc_server.webrtc.dtls")
    app = stub_app()
    url = await serve(aiohttp_server, app)
    ffmpeg = await start_ffmpeg(url, 2)
    events, stderr = await events_of(ffmpeg)
    assert ffmpeg.returncode == 1 and events[-1]["event"] == "failed", (events, stderr[-2000:])
    assert dtls.PEER_KEYS["EC secp224r1"] >= 1
    assert "secp224r1" in caplog.text and "cert_file/key_file" in caplog.text
    await wait_for(lambda: len(app[REGISTRY]) == 0)
