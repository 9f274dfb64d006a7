"""What the real-browser tests need around them: a loopback-only network, a fake camera
fed by a real photo, and Debian's Chromium (the server runs as its own process:
``tests.helpers.ServerProcess``).

Why a network namespace: Chrome gathers ICE candidates on every interface it can see, and
the server would too. Inside a fresh namespace that has only ``lo``, nothing the browser or
the server does can leave this machine. The namespace is entered by the calling *thread*
(``unshare(CLONE_NEWNET)``); processes it starts (the server, Playwright's driver and
through it Chromium) inherit it, and the thread returns to its own namespace afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .helpers import ROOT, ServerProcess, cannot_run

CLONE_NEWNET = 0x40000000
CHROMIUM = Path("/usr/bin/chromium")

#: Flags from ../shared/notes/loopback-webrtc.md: no background traffic, a fake camera
#: that needs no permission prompt, and host candidates on loopback.
CHROMIUM_FLAGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-proxy-server",
)
#: The page server's port in a module's namespace: free, since the namespace is new.
PAGE_PORT = 8080


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


@contextlib.contextmanager
def browser_network() -> Iterator[None]:
    """A module's real-browser tests inside a loopback-only namespace, or ``cannot_run``
    saying why (they never run on the real network)."""
    reason = missing_requirements()
    if reason is not None:
        cannot_run(f"real-browser tests: {reason}")
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(loopback_only_network())
        except PermissionError as exc:
            cannot_run(f"real-browser tests: no private network namespace ({exc}); "
                       "they never run on the real network")
        yield


@contextlib.contextmanager
def page_server(log_dir: Path, **env: str) -> Iterator[ServerProcess]:
    """The server as users run it, on ``PAGE_PORT``, serving this checkout's page with one
    inference thread (the browser shares the two cores); ``env``: more ``RTC_*`` settings."""
    process = ServerProcess(log_dir / "server.log",
                            {"RTC_THREADS": "1", "RTC_STATIC_DIR": str(ROOT / "static"), **env}, port=PAGE_PORT)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def launch_chromium(playwright: Any, tmp: Path, camera_frame: np.ndarray, viewport: tuple[int, int] = (1000, 640),
                    args: Sequence[str] = ()) -> Any:
    """Debian's Chromium with a fake camera showing ``camera_frame`` (a Y4M written here, at
    test time), a fresh profile in ``tmp``; a Playwright ``BrowserContext``."""
    camera = write_y4m(camera_frame, tmp / "camera.y4m")
    return playwright.chromium.launch_persistent_context(
        str(tmp / "profile"), executable_path=str(CHROMIUM), headless=True,
        viewport={"width": viewport[0], "height": viewport[1]},
        args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-video-capture={camera}", *args])
