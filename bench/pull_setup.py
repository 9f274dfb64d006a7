"""Pull-source set-up time: ``POST /streams`` → 201, and → the first detection message.

Real sources on loopback: GStreamer's gst-rtsp-server serving bus.jpg as live H.264 (15 fps,
a keyframe every second), and an HTTP server with an MP4 and an HLS VOD playlist of the same
picture. The server runs in this process (the app factory, the real model); the first
detection is read from a sink added to the stream, as any consumer gets it. Each source is
started ``--runs`` times, one after the other, and deleted after its first detection.

What the figures contain: for RTSP, the wait for the next keyframe (up to a second: the
RTSP server's pipeline is shared, a new client joins it mid-GOP) and FFmpeg's probe; for
HTTP, the requests the demuxer makes (MP4: the index at the end, a range request); then one
decode and one inference.

    python -m bench.pull_setup [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import emit, find_model, load, summary, table
from rtc_server.app import create_app
from rtc_server.config import Settings
from rtc_server.signaling.context import REGISTRY
from tests.pull_media import make_clip, make_hls, media_server, rtsp_server


class FirstMessage:
    def __init__(self) -> None:
        self.at: float | None = None
        self.event = asyncio.Event()

    def send(self, message: dict[str, Any]) -> None:
        if message.get("type") == "detections" and self.at is None:
            self.at = time.perf_counter()
            self.event.set()

    def close(self) -> None:
        pass


async def one(http: aiohttp.ClientSession, base: str, app: web.Application, source_url: str) -> tuple[float, float]:
    started = time.perf_counter()
    async with http.post(f"{base}/streams", json={"url": source_url}) as response:
        answer = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST /streams {source_url}: {response.status} {answer}")
    created = time.perf_counter()
    stream = app[REGISTRY].get(answer["id"])
    assert stream is not None
    sink = FirstMessage()
    stream.add_sink(sink)
    async with asyncio.timeout(30):
        await sink.event.wait()
    assert sink.at is not None
    async with http.delete(f"{base}/streams/{answer['id']}") as response:
        assert response.status == 204
    return (created - started) * 1000, (sink.at - started) * 1000


async def run(runs: int) -> dict[str, Any]:
    app = create_app(Settings(model=find_model(), source_allow_networks=("127.0.0.0/8",),
                              data_dir=Path(tempfile.mkdtemp(prefix="rtc-bench-data-"))))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    rtsp = rtsp_server()
    with tempfile.TemporaryDirectory(prefix="issue-13-pull-bench-") as folder:
        make_clip(Path(folder) / "bus.mp4", "mp4")
        make_hls(Path(folder))
        files = media_server(Path(folder))
        await rtsp.start()
        await files.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with asyncio.timeout(60):
                    while (await http.get(f"{base}/readyz")).status != 200:
                        await asyncio.sleep(0.05)
                sources = {"rtsp (live H.264)": f"rtsp://127.0.0.1:{rtsp.port}/bus",
                           "http mp4": f"http://127.0.0.1:{files.port}/bus.mp4",
                           "http hls (vod)": f"http://127.0.0.1:{files.port}/bus.m3u8"}
                results: dict[str, dict[str, list[float]]] = {}
                for name, url in sources.items():
                    created, first = [], []
                    for index in range(runs):
                        c, f = await one(http, base, app, url)
                        created.append(c)
                        first.append(f)
                        print(f"  {name} run {index + 1}: 201 after {c:.0f} ms, first detection after {f:.0f} ms",
                              flush=True)
                    results[name] = {"created_ms": created, "first_detection_ms": first}
        finally:
            await files.stop()
            await rtsp.stop()
            await runner.cleanup()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load_start = load()
    results = asyncio.run(run(args.runs))
    rows = []
    out: dict[str, Any] = {"runs": args.runs, "sources": {}}
    for name, figures in results.items():
        created, first = summary(figures["created_ms"]), summary(figures["first_detection_ms"])
        rows.append([name, created["p50"], first["p50"], first["min"], first["max"]])
        out["sources"][name] = {"created_ms": created, "first_detection_ms": first}
    print(table(["source", "POST → 201 ms (median)", "POST → first detection ms (median)", "min", "max"], rows))
    emit("pull_setup", out, load_start)


if __name__ == "__main__":
    main()
