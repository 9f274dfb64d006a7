"""What the real-browser tests need around them: a loopback-only network, a fake camera
fed by a real photo, the server as its own process, and Debian's Chromium.

Why a network namespace: Chrome gathers ICE candidates on every interface it can see, and
the server would too. Inside a fresh namespace that has only ``lo``, nothing the browser or
the server does can leave this machine. The namespace is entered by the calling *thread*
(``unshare(CLONE_NEWNET)``); processes it starts (the server, Playwright's driver and
through it Chromium) inherit it, and the thread returns to its own namespace afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

CLONE_NEWNET = 0x40000000
CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent

#: Flags from ../shared/notes/loopback-webrtc.md: no background traffic, a fake camera
#: that needs no permission prompt, and host candidates on loopback.
CHROMIUM_FLAGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-proxy-server",
)
#: Straight to 127.0.0.1, whatever *_proxy variables say.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def missing_requirements() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if not shutil.which("ip"):
        return "iproute2's `ip` is missing: cannot bring up loopback in a private network namespace"
    return None


@contextlib.contextmanager
def loopback_only_network() -> Iterator[None]:
    """Run the calling thread (and every process it starts) in a new namespace with only ``lo``."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net", "rb") as home:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise PermissionError(f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            links = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True).stdout
            names = [line.split(":")[1].strip() for line in links.splitlines()]
            if names != ["lo"]:
                raise RuntimeError(f"the test namespace is not loopback-only: {names}")
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(f"setns back to the original network failed: {os.strerror(ctypes.get_errno())}")


def write_y4m(rgb: np.ndarray, path: Path, frames: int = 30, fps: int = 30) -> Path:
    """A Y4M (I420) clip of one still image; Chrome's fake camera loops it."""
    h, w = rgb.shape[:2]
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes()
    with path.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n")
            fh.write(yuv)
    return path


class ServerProcess:
    """``python -m rtc_server`` on 127.0.0.1 only, as users run it (restartable)."""

    def __init__(self, model: Path, port: int, log_path: Path) -> None:
        self.model, self.port, self.log_path = model, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0, **settings: str) -> None:
        """Start (again); ``settings`` are extra ``RTC_*`` variables, e.g. ``RTC_MAX_SESSIONS="1"``."""
        env = {**os.environ, "RTC_ICE_ADDRESSES": "127.0.0.1", "RTC_ICE_SERVERS": "", "RTC_THREADS": "1", **settings}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtc_server", "--host", "127.0.0.1", "--port", str(self.port),
             "--model", str(self.model), "--static-dir", str(ROOT / "static")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while self.get("/readyz", ok_only=False)[0] != 200:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}); see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready in {timeout} s; see {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: every session closes its peer connection
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, path: str, ok_only: bool = True) -> tuple[int, str]:
        try:
            with _HTTP.open(self.url + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            if ok_only:
                raise
            return exc.code, exc.read().decode()
        except OSError:
            if ok_only:
                raise
            return 0, ""

    def metric(self, name: str) -> float:
        """One unlabelled sample from ``/metrics``."""
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def ready(self) -> dict[str, object]:
        return json.loads(self.get("/readyz")[1])
