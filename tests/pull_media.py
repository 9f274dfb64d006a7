"""Real media and real servers for the pull-source tests.

- ``make_clip`` / ``make_hls``: bus.jpg encoded as H.264 with PyAV (MP4, MPEG-TS, an HLS
  VOD playlist of MPEG-TS segments), so detections are real (bus, person).
- ``MediaProcess``: a server in its own process that prints ``READY <port>``; it can be
  killed and started again on the same port — a source restarting mid-stream.
  ``rtsp_server`` runs GStreamer's gst-rtsp-server (``tests/rtsp_server.py`` under the
  system Python, which has PyGObject); ``media_server`` serves a folder over HTTP.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np

from tests.helpers import FIXTURES, cannot_run

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
WIDTH, HEIGHT, FPS = 540, 720, 15


def bus_picture() -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(FIXTURES / "bus.jpg")), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (WIDTH, HEIGHT))


def make_clip(path: Path, fmt: str, seconds: float = 3.0, options: dict[str, str] | None = None) -> Path:
    """bus.jpg as ``seconds`` of H.264 at ``FPS``, a keyframe every second."""
    picture = bus_picture()
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS), "keyint_min": str(FPS)}
        for index in range(round(seconds * FPS)):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def make_hls(folder: Path, seconds: float = 3.0) -> Path:
    """A VOD playlist ``bus.m3u8`` of one-second MPEG-TS segments."""
    return make_clip(folder / "bus.m3u8", "hls", seconds, {
        "hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod",
        "hls_segment_filename": str(folder / "seg%d.ts")})


class LiveHls:
    """A live HLS stream being written: ``folder/live.m3u8`` gains a one-second segment every
    second (bus.jpg at ``FPS``), the playlist keeps the last four, no end. A thread of the
    test process writes it in real time until ``stop``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, name="live-hls", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _write(self) -> None:
        picture = bus_picture()
        options = {"hls_time": "1", "hls_list_size": "4", "hls_flags": "delete_segments+omit_endlist",
                   "hls_segment_filename": str(self.folder / "live%d.ts")}
        with av.open(str(self.folder / "live.m3u8"), "w", format="hls", options=options) as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS), "keyint_min": str(FPS)}
            started = time.monotonic()
            index = 0
            while not self._stop.is_set():
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
                index += 1
                self._stop.wait(max(0.0, started + index / FPS - time.monotonic()))


class MediaProcess:
    """A server process started with ``argv + ["--port", N]``; ``port`` once it is ready."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.argv = argv
        self.name = name
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> int:
        """Start on ``self.port`` (0 at first: any free port, kept for restarts)."""
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, "--port", str(self.port), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(30):
                line = (await self.process.stdout.readline()).decode()
        except TimeoutError:
            line = ""
        if not line.startswith("READY "):
            await self.stop()
            raise RuntimeError(f"{self.name} did not start: {line!r}")
        self.port = int(line.split()[1])
        return self.port

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def rtsp_server() -> MediaProcess:
    """gst-rtsp-server serving bus.jpg as live H.264 at ``rtsp://127.0.0.1:PORT/bus``."""
    if not Path(SYSTEM_PYTHON).is_file():
        cannot_run(f"{SYSTEM_PYTHON} (with python3-gi) is needed to run gst-rtsp-server")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', "
         "'1.0'); from gi.repository import Gst, GstRtspServer; Gst.init(None); import sys; "
         "sys.exit(0 if all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay', 'imagefreeze', "
         "'jpegdec', 'videoscale')) else 3)"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        cannot_run("gst-rtsp-server with x264enc is not installed (apt: python3-gi gir1.2-gst-rtsp-server-1.0 "
                   "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly): "
                   + probe.stderr.decode()[-300:])
    return MediaProcess([SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), "--image", str(FIXTURES / "bus.jpg"),
                          "--fps", str(FPS)], "gst-rtsp-server")


def media_server(folder: Path) -> MediaProcess:
    """An aiohttp static file server (Range requests) for ``folder``."""
    return MediaProcess([sys.executable, str(HERE / "media_server.py"), "--dir", str(folder)], "media server")


#: A person from bus.jpg (its box there, in bus.jpg's own 810x1080 pixels).
PERSON_IN_BUS = (223, 408, 345, 861)
CROSSING_SIZE = (640, 480)


def crossing_frames(seconds: float = 5.0, fps: int = FPS, height: int = 240) -> list[np.ndarray]:
    """A person (cropped from bus.jpg) walking left to right across a blurred background
    (bus.jpg itself), 640x480 RGB frames: its box's bottom centre goes from x = 0.06 to 0.94
    of the width at y ≈ 0.92, so it crosses a vertical line at x = 0.5 once, half-way
    (issue 21: a line crossing with the real model)."""
    rgb = cv2.cvtColor(cv2.imread(str(FIXTURES / "bus.jpg")), cv2.COLOR_BGR2RGB)
    x1, y1, x2, y2 = PERSON_IN_BUS
    crop = rgb[y1:y2, x1:x2]
    crop = cv2.resize(crop, (round(crop.shape[1] * height / crop.shape[0]), height))
    width, full = CROSSING_SIZE
    background = cv2.GaussianBlur(cv2.resize(rgb, CROSSING_SIZE), (0, 0), 25)
    w = crop.shape[1]
    top = full - 40 - height
    n = round(seconds * fps)
    frames = []
    for index in range(n):
        centre = width * (0.06 + 0.88 * index / (n - 1))
        left = round(centre - w / 2)
        frame_rgb = background.copy()
        lo, hi = max(left, 0), min(left + w, width)
        frame_rgb[top:top + height, lo:hi] = crop[:, lo - left:hi - left]
        frames.append(frame_rgb)
    return frames


def make_crossing(path: Path, seconds: float = 5.0, fps: int = FPS, height: int = 240) -> Path:
    """``crossing_frames`` as H.264 MP4 (a pulled video)."""
    width, full = CROSSING_SIZE
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, full, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps), "keyint_min": str(fps)}
        for index, frame_rgb in enumerate(crossing_frames(seconds, fps, height)):
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
