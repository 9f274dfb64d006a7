"""Experiment (issue 6, 2026-11-24): headless Chromium as the client: decode CPU per frame for VP8 vs H.264, and the
jitter-buffer wait with the marker release off and on, as the server sees a real browser.

Chromium runs the project's own page (static/) with a fake camera fed from a Y4M file made
from tests/fixtures/bus.jpg, and is driven over the DevTools protocol (aiohttp's websocket
client, no extra dependency). The server runs in this process with the stage clocks of
``bench.experiments.marker_common``; the codec is forced per session by the server's answer preference.
Browser clocks are not ours, so this bench reports server-side figures only.

Chromium would gather this machine's external addresses too: the script refuses to start
unless the only network interface is ``lo``. Run it in a fresh network namespace::

    unshare --net sh -c 'ip link set lo up && python -m bench.experiments.marker_chrome'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpReceiver

import rtc_server.webrtc.peer as session_module
from bench.common import find_model
from bench.experiments.marker_common import (
    NoopDetector,
    StageClock,
    camera_frames,
    decode_cost,
    install,
    p50,
    uninstall,
)
from rtc_server.app import create_app
from rtc_server.config import Settings
from rtc_server.signaling.context import REGISTRY
from rtc_server.webrtc.marker_release import use_marker_release

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
DEVTOOLS_PORT = 9333


def loopback_only() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]  # this network namespace's


def write_y4m(path: Path, fps: int = 30) -> None:
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for i, image in enumerate(camera_frames(60)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def force_codec(mime: str) -> None:
    """Make the server's answer choose ``mime`` (bench only: replaces the preference hook)."""
    def prefer(pc: RTCPeerConnection) -> Any:
        caps = RTCRtpReceiver.getCapabilities("video")
        assert caps is not None
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences([c for c in caps.codecs if c.mimeType in (mime, "video/rtx")])
        return transceiver

    session_module.prefer_cheap_video_decoder = prefer  # type: ignore[assignment]


class DevTools:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws, self._id = http, ws, 0

    async def evaluate(self, expression: str) -> Any:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": "Runtime.evaluate",
                                 "params": {"expression": expression, "awaitPromise": True, "userGesture": True}})
        while True:
            reply = await self.ws.receive_json()
            if reply.get("id") == self._id:
                return reply.get("result", {}).get("result", {}).get("value")


async def session(tools: DevTools, app: web.Application, codec: str, marker: bool, seconds: float) -> dict[str, Any]:
    use_marker_release(marker)
    force_codec(codec)
    clock = StageClock(keep_encoded=150)
    install(clock)
    try:
        await tools.evaluate("document.getElementById('start').click()")
        deadline = time.monotonic() + 20
        while len(app[REGISTRY]) == 0 or len(clock.frames) < 10:
            if time.monotonic() > deadline:
                status = await tools.evaluate("document.getElementById('status').textContent")
                return {"codec": codec, "marker": marker, "error": f"no video: {status}"}
            await asyncio.sleep(0.1)
        first = len(clock.frames)
        await asyncio.sleep(seconds)
        frames = list(clock.frames.values())[first:]
        await tools.evaluate("document.getElementById('stop').click()")
        deadline = time.monotonic() + 10
        while len(app[REGISTRY]) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        uninstall()
    waits = [(f.released - f.marker_packet) * 1000 for f in frames if f.released and f.marker_packet]
    receive = [(f.recv - f.first_packet) * 1000 for f in frames if f.recv and f.first_packet]
    return {
        "codec": codec, "marker": marker, "frames": len(frames), "fps": len(frames) / seconds,
        "size": "x".join(map(str, clock.size)) if clock.size else "?",
        "marker_to_release_p50_ms": p50(waits), "first_packet_to_recv_p50_ms": p50(receive),
        "decode_thread_cpu_p50_ms": p50(f.decode_cpu * 1000 for f in frames if f.decode_cpu is not None),
        "decode_cost": decode_cost(clock.encoded) if clock.encoded else None,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(model=find_model(args.model), ice_addresses=("127.0.0.1",),
                        ice_allow_networks=("127.0.0.0/8",), marker_release=True)
    app = create_app(settings, NoopDetector() if args.detector == "noop" else None)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        y4m = Path(tmp) / "bus.y4m"
        write_y4m(y4m)
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-video-capture={y4m}", "--allow-loopback-in-peer-connection",
                 "--disable-features=WebRtcHideLocalIpsWithMdns", f"--remote-debugging-port={DEVTOOLS_PORT}",
                 f"--user-data-dir={tmp}/profile", f"http://127.0.0.1:{args.port}/"]
        chrome = await asyncio.create_subprocess_exec(CHROMIUM, *flags, stdout=asyncio.subprocess.DEVNULL,
                                                      stderr=asyncio.subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as http:
                targets: list[dict[str, Any]] = []
                for _ in range(100):
                    with contextlib.suppress(aiohttp.ClientError):
                        targets = await (await http.get(f"http://127.0.0.1:{DEVTOOLS_PORT}/json")).json()
                        if any(t.get("type") == "page" for t in targets):
                            break
                    await asyncio.sleep(0.2)
                page = next(t for t in targets if t.get("type") == "page")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    tools = DevTools(http, ws)
                    for _ in range(100):  # the page's script must be there before the first click
                        if await tools.evaluate("document.readyState === 'complete' && "
                                                "!document.getElementById('start').disabled"):
                            break
                        await asyncio.sleep(0.1)
                    offered = await tools.evaluate("RTCRtpSender.getCapabilities('video').codecs"
                                                   ".map(c => c.mimeType + ' ' + (c.sdpFmtpLine || '')).join('\\n')")
                    print(f"# Chromium can send:\n{offered}", file=sys.stderr)
                    for round_no in range(args.rounds):
                        for codec in ("video/VP8", "video/H264"):
                            for marker in ((False, True) if round_no % 2 == 0 else (True, False)):
                                r = await session(tools, app, codec, marker, args.seconds)
                                print(f"# {json.dumps(r, default=str)[:300]}", file=sys.stderr, flush=True)
                                results.append(r)
        finally:
            chrome.terminate()
            await asyncio.wait_for(chrome.wait(), 10)
            await runner.cleanup()
    return {"sessions": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--detector", choices=("yolo", "noop"), default="noop")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if not loopback_only():
        raise SystemExit("refusing to start Chromium: interfaces other than lo exist (see the docstring)")
    summary = asyncio.run(main_async(args))
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    summary["chromium"] = version.splitlines()[-1] if version else "?"
    print("| codec | release | size | frames/s | marker->released p50 | first packet->recv p50 | "
          "decoder-thread CPU p50 | decode CPU/frame (all threads) | decode+RGB CPU/frame | mean frame bytes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in summary["sessions"]:
        if "error" in r:
            print(f"| {r['codec']} | {'marker' if r['marker'] else 'stock'} | {r['error']} |")
            continue
        d = r["decode_cost"] or {}
        print(f"| {r['codec']} | {'marker' if r['marker'] else 'stock'} | {r['size']} | {r['fps']:.1f} | "
              f"{r['marker_to_release_p50_ms']:.1f} | {r['first_packet_to_recv_p50_ms']:.1f} | "
              f"{r['decode_thread_cpu_p50_ms']:.2f} | {d.get('decode_cpu_ms', 0):.2f} | "
              f"{d.get('decode_rgb_cpu_ms', 0):.2f} | {d.get('mean_frame_bytes', 0):.0f} |")
    print(json.dumps(summary, default=lambda o: round(o, 3) if isinstance(o, float) else str(o)))


if __name__ == "__main__":
    main()
