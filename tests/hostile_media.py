"""Hostile sources for pull streams, and a probe of the server's health while they attack.

Every server here listens on loopback only and stops by itself: each attack is bounded in
time and in bytes, so a server under test that never gives up still ends the attack.
They run in threads of the calling process (tests, ``bench/hostile_pull.py``), with the
server under test in its own process (``python -m rtc_server``) so that its memory is
measured alone.

- ``EndlessPlaylist``: an HLS playlist that never ends (``bytes``: long comment lines,
  ``segments``: a segment line after another, ``drip``: a line now and then, so slowly
  that no cap is reached before the open deadline).
- ``GarbageStream``: a live FLV stream whose first second is good (it opens and plays)
  and the rest only corrupt video.
- ``RtspRedirector``: answers DESCRIBE with ``302`` to another address; ``Listener`` there
  records whether anyone came.
- ``Listener``: accepts connections and never answers (a stalled RTSP camera), recording
  each one and whether the other side has closed it.
- ``TlsFront``: TLS in front of a plain server (RTSPS made of the suite's RTSP server).
- ``make_huge_clip``, ``make_growing_ts``: videos of frames over the 4K cap (from the header
  on, or only after a few small frames).
- ``HealthProbe``: ``GET /healthz`` every 50 ms and the server process's RSS, in a thread.
"""

from __future__ import annotations

import random
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import av
import numpy as np

#: Straight to the server, whatever *_proxy variables say.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ThreadedServer:
    """A TCP server on ``host``:any port, each connection handled by ``handle(sock)`` in a thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                outer.handle(self.request)

        self.connections = 0
        self.stopped = threading.Event()
        self._server = _Server((host, 0), Handler)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)

    def start(self) -> ThreadedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def handle(self, sock: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


def _read_request(sock: socket.socket, limit: int = 65536) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class EndlessPlaylist(ThreadedServer):
    """``GET /live.m3u8``: an HLS playlist that never ends, ``max_seconds`` and ``max_bytes`` at most."""

    def __init__(self, mode: str, max_seconds: float = 30.0, max_bytes: int = 256 * 2**20) -> None:
        super().__init__()
        assert mode in ("bytes", "segments", "drip")
        self.mode = mode
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self.sent = 0
        self.url = f"http://127.0.0.1:{self.port}/live.m3u8"

    def handle(self, sock: socket.socket) -> None:
        _read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nConnection: close\r\n\r\n"
                     b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n")
        started = time.monotonic()
        index = 0
        try:
            while (not self.stopped.is_set() and time.monotonic() - started < self.max_seconds
                   and self.sent < self.max_bytes):
                if self.mode == "bytes":
                    block = b"".join(b"#EXT-X-PROGRAM-DATE-TIME:" + b"x" * 1000 + b"\n" for _ in range(64))
                    block += f"#EXTINF:1.0,\nseg{index}.ts\n".encode()
                elif self.mode == "segments":
                    block = b"".join(f"#EXTINF:1.0,\ns{index + i}.ts\n".encode() for i in range(512))
                else:
                    block = f"#EXTINF:1.0,\nseg{index}.ts\n".encode()
                    time.sleep(0.2)
                index += 1
                sock.sendall(block)
                self.sent += len(block)
        except OSError:
            pass  # the server under test hung up: the attack is over


def flv_clip(seconds: float, width: int = 320, height: int = 240, fps: int = 15) -> bytes:
    """A short H.264 FLV clip (grey with a moving bar), made once and kept under /tmp."""
    path = _tmp(f"clip-{width}x{height}-{seconds}.flv")
    if not path.exists():
        with av.open(str(path), "w", format="flv") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
            picture = np.full((height, width, 3), 128, np.uint8)
            for index in range(round(seconds * fps)):
                picture[:] = 128
                picture[:, (index * 8) % width:(index * 8) % width + 8] = 255
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return path.read_bytes()


def flv_tags(data: bytes) -> list[bytes]:
    """An FLV file's tags (each with its trailing previous-tag-size), the file header skipped."""
    tags, position = [], 13
    while position + 11 <= len(data):
        size = int.from_bytes(data[position + 1:position + 4], "big")
        tags.append(data[position:position + 11 + size + 4])
        position += 11 + size + 4
    return tags


def corrupt_flv_tags(data: bytes, seed: int = 7) -> bytes:
    """The tags of ``data`` with every H.264 picture's bytes random (the sequence header and
    the framing kept): the demuxer makes packets, the decoder refuses each one."""
    rng = random.Random(seed)
    out = bytearray()
    for tag in flv_tags(data):
        if tag[0] == 9 and tag[12] == 1:  # a video tag carrying NAL units
            tag = tag[:16] + bytes(rng.getrandbits(8) for _ in range(len(tag) - 20)) + tag[-4:]
        out += tag
    return bytes(out)


class GarbageStream(ThreadedServer):
    """``GET /live.flv``: a live (no length) FLV stream: ``good`` seconds of video, then only
    corrupt video at about real rate, ``max_seconds`` at most."""

    def __init__(self, good: float = 1.0, max_seconds: float = 30.0) -> None:
        super().__init__()
        self.good = flv_clip(good)
        self.garbage = corrupt_flv_tags(flv_clip(2.0))
        self.max_seconds = max_seconds
        self.url = f"http://127.0.0.1:{self.port}/live.flv"

    def handle(self, sock: socket.socket) -> None:
        _read_request(sock)
        started = time.monotonic()
        try:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nConnection: close\r\n\r\n")
            sock.sendall(self.good)
            while not self.stopped.is_set() and time.monotonic() - started < self.max_seconds:
                for tag in flv_tags(b"\0" * 13 + self.garbage):
                    sock.sendall(tag)
                    time.sleep(1 / 15)
        except OSError:
            pass


class Listener(ThreadedServer):
    """Accepts and never answers; ``closed`` counts connections the other side has closed."""

    def __init__(self, host: str = "127.0.0.1", hold: float = 60.0) -> None:
        super().__init__(host)
        self.hold = hold
        self.closed = 0
        self.accepted = threading.Event()

    def handle(self, sock: socket.socket) -> None:
        self.accepted.set()
        sock.settimeout(0.1)
        started = time.monotonic()
        while not self.stopped.is_set() and time.monotonic() - started < self.hold:
            try:
                if not sock.recv(65536):
                    self.closed += 1
                    return
            except TimeoutError:
                continue
            except OSError:
                self.closed += 1
                return


class RtspRedirector(ThreadedServer):
    """An RTSP server whose every DESCRIBE is answered ``302`` to ``location``."""

    def __init__(self, location: str) -> None:
        super().__init__()
        self.location = location
        self.url = f"rtsp://127.0.0.1:{self.port}/camera"

    def handle(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        try:
            while request := _read_request(sock):
                lines = request.decode("latin-1").split("\r\n")
                cseq = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("cseq")), "1")
                if lines[0].startswith("OPTIONS"):
                    answer = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY\r\n\r\n"
                else:
                    answer = f"RTSP/1.0 302 Moved Temporarily\r\nCSeq: {cseq}\r\nLocation: {self.location}\r\n\r\n"
                sock.sendall(answer.encode())
        except OSError:
            pass


class TlsFront(ThreadedServer):
    """TLS in front of a plain TCP server on 127.0.0.1:``upstream`` (an RTSPS camera made of
    gst-rtsp-server): each connection is decrypted and relayed both ways."""

    def __init__(self, upstream: int, cert: Path, key: Path) -> None:
        super().__init__()
        self.upstream = upstream
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)

    def handle(self, sock: socket.socket) -> None:
        try:
            secure = self._context.wrap_socket(sock, server_side=True)
            plain = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
        except OSError:
            return
        plain.settimeout(None)
        secure.settimeout(None)

        def pump(source: socket.socket, target: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, target):
                    try:
                        end.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(plain, secure), daemon=True)
        back.start()
        pump(secure, plain)
        back.join(10)
        plain.close()


# ----- videos over the frame cap ------------------------------------------------------------------
def make_huge_clip(path: Path, width: int = 8192, height: int = 8192, frames: int = 3, fps: int = 15) -> Path:
    """MJPEG in Matroska, flat frames (a small file of huge frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        picture = np.full((height, width, 3), 96, np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        for index in range(frames):
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def make_growing_ts(path: Path, small: tuple[int, int] = (320, 240), large: tuple[int, int] = (4096, 2304),
                    fps: int = 15) -> Path:
    """H.264 MPEG-TS: two seconds of ``small`` frames, then ``large`` ones (the header says small)."""
    _encode_h264(path, [(*small, 2 * fps), (*large, 2 * fps)], fps)
    return path


def _encode_h264(path: Path, parts: list[tuple[int, int, int]], fps: int) -> None:
    """Each part (width, height, frames) encoded on its own, the MPEG-TS outputs concatenated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b""
    pts = 0
    for number, (width, height, count) in enumerate(parts):
        part = path.with_name(f"{path.stem}.part{number}.ts")
        with av.open(str(part), "w", format="mpegts", options={"mpegts_copyts": "1"}) as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps)}
            picture = np.full((height, width, 3), 128, np.uint8)
            for index in range(count):
                picture[:, :] = 128
                bar = (index * 8) % width
                picture[:, bar:bar + 8] = 255
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = pts
                pts += 1
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        data += part.read_bytes()
        part.unlink()
    path.write_bytes(data)


def _tmp(name: str) -> Path:
    folder = Path("/tmp") / "rtc-hostile-media"
    folder.mkdir(exist_ok=True)
    return folder / name


class StaticFolder:
    """``tests/media_server.py`` (aiohttp static files, Range requests) in its own process,
    for callers without an event loop; ``port`` once started."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StaticFolder:
        script = Path(__file__).resolve().parent / "media_server.py"
        self._process = subprocess.Popen([sys.executable, str(script), "--dir", str(self.folder), "--port", "0"],
                                         stdout=subprocess.PIPE)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode()
        if not line.startswith("READY "):
            self.__exit__()
            raise RuntimeError(f"media server did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)


# ----- the server's health meanwhile -------------------------------------------------------------
class HealthProbe:
    """``GET /healthz`` every ``interval`` s (a 5 s timeout counts as 5 s) and the RSS of ``pid``,
    from a thread until ``stop``: the worst answer time and the RSS growth over the start."""

    def __init__(self, base_url: str, pid: int | None, interval: float = 0.05) -> None:
        self.base_url = base_url.rstrip("/")
        self.pid = pid
        self.interval = interval
        self.latencies: list[float] = []
        self.failures = 0
        self.rss_start = rss_bytes(pid) if pid is not None else 0
        self.rss_max = self.rss_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with _HTTP.open(self.base_url + "/healthz", timeout=5) as response:
                    response.read()
                    ok = response.status == 200
            except OSError:
                ok = False
            self.latencies.append(time.monotonic() - started)
            self.failures += 0 if ok else 1
            if self.pid is not None:
                self.rss_max = max(self.rss_max, rss_bytes(self.pid))
            self._stop.wait(self.interval)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    @property
    def rss_growth(self) -> int:
        return self.rss_max - self.rss_start


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
