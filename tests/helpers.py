"""The one home of the test suite's helpers: paths, readiness waits, free ports, metrics
parsing, the server as its own process, self-signed certificates, and ``cannot_run``.

Test modules import from here (and from the non-test support modules ``sdp``,
``containers``, ``browser_env``, ``nat_probe``, ``model_wheels``, ``pull_media``, and the test
double ``stub_detector``), never from one another:
``tests/test_suite_rules.py`` checks that.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = ROOT.parent / "shared"
COCO128 = SHARED / "data" / "coco128" / "images" / "train2017"

ServerFactory = Callable[..., "asyncio.Future[TestServer]"]
ClientFactory = Callable[..., "asyncio.Future[TestClient]"]

#: Straight to 127.0.0.1, whatever *_proxy variables say.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ----- essential dependencies ------------------------------------------------------------------
#: Set by CI (``.ci/run``): a test that cannot run here for want of a real dependency
#: (a browser, a container engine, a network namespace, a third-party client) fails instead
#: of skipping, so CI cannot go green on what it never ran.
STRICT = os.environ.get("RTC_TESTS_STRICT") == "1"


def cannot_run(reason: str) -> NoReturn:
    """Skip (on a user's machine) or fail (under ``RTC_TESTS_STRICT=1``), saying why."""
    if STRICT:
        pytest.fail(f"essential test could not run (RTC_TESTS_STRICT=1): {reason}", pytrace=False)
    pytest.skip(reason)


def require_root_tools(*tools: str) -> None:
    """``cannot_run`` unless this process is root and every tool is on PATH (namespaces, iptables)."""
    if os.geteuid() != 0:
        cannot_run(f"needs root for a private network namespace ({', '.join(tools)})")
    import shutil

    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        cannot_run(f"{', '.join(missing)} missing (.ci/run installs them)")


# ----- ports ---------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Where ``free_udp_range`` looks: below the kernel's ephemeral range (32768+) and below the
#: fixed ranges of tests/test_container.py (31100+), a slice of its own for each pytest-xdist
#: worker, so two workers never pick the same free range at the same moment and both bind it.
UDP_SEARCH = (20000, 30500)


def xdist_worker() -> int:
    """This process's pytest-xdist worker number (``gw3`` -> 3); 0 without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


def free_udp_range(size: int, start: int | None = None) -> tuple[int, int]:
    """``size`` consecutive UDP ports on 127.0.0.1 that are free right now, in this worker's
    slice of ``UDP_SEARCH`` (or from ``start``)."""
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    span = (UDP_SEARCH[1] - UDP_SEARCH[0]) // workers
    low_end = UDP_SEARCH[0] + span * (xdist_worker() % workers) if start is None else start
    for low in range(low_end, low_end + span - size if start is None else 32000, size):
        socks = []
        try:
            for port in range(low, low + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return low, low + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP range")


# ----- waiting -------------------------------------------------------------------------------------
async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``predicate`` until true (state changes driven by the peer's own tasks)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def wait_ready(target: str | TestClient, process: ServerProcess | None = None,
                     ssl_context: ssl.SSLContext | bool = True, timeout: float = 60.0) -> None:
    """Until ``/readyz`` answers 200: ``target`` is a base URL or an aiohttp ``TestClient``;
    with ``process``, fail at once (with its log) if it exits."""
    if isinstance(target, TestClient):
        async with asyncio.timeout(timeout):
            while (await target.get("/readyz")).status != 200:
                await asyncio.sleep(0.05)
        return
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process is not None:
                assert process.proc is not None and process.proc.poll() is None, process.log
            try:
                async with http.get(f"{target}/readyz", ssl=ssl_context) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{target} never became ready" + (f":\n{process.log}" if process else ""))


def wait_ready_sync(url: str, alive: Callable[[], bool] = lambda: True, timeout: float = 90.0,
                    ssl_context: ssl.SSLContext | None = None) -> None:
    """The blocking form, for threads, namespaces and containers: ``/readyz`` 200 or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server behind {url} exited before it was ready")
        if http_get(url + "/readyz", ssl_context=ssl_context)[0] == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url}/readyz was not 200 within {timeout} s")


async def serve(aiohttp_server: ServerFactory, app: web.Application) -> str:
    """Serve ``app`` on 127.0.0.1 and return its base URL once ``/readyz`` says 200."""
    server = await aiohttp_server(app, host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")
    await wait_ready(url, timeout=30)
    return url


# ----- HTTP and metrics ----------------------------------------------------------------------------
def http_get(url: str, timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None,
             headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET, 0 when nothing answers; never raises for HTTP errors."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        opener = _HTTP if ssl_context is None else urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ssl_context))
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> ``{'name{labels}': value}`` (comments skipped)."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


async def scrape(url: str, path: str = "/metrics") -> dict[str, float]:
    """The server's ``/metrics`` at ``url``, parsed."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}") as response:
        assert response.status == 200, await response.text()
        return parse_metrics(await response.text())


# ----- the server as its own process ------------------------------------------------------------
class ServerProcess:
    """``python -m rtc_server`` as users run it: its own process on a loopback port, ICE
    pinned to 127.0.0.1, output kept in a log file; restartable.

    ``env`` (``RTC_*`` variables) applies to every start; ``start(**extra)`` adds more for
    that start only (``start(RTC_MAX_SESSIONS="1")``).
    """

    def __init__(self, log_path: Path, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 port: int | None = None, host: str = "127.0.0.1",
                 entry: Sequence[str] = ("-m", "rtc_server")) -> None:
        self.port = port if port is not None else free_port()
        self.host = host
        self.log_path = log_path
        self.env = dict(env or {})
        self.args = tuple(args)
        #: What ``python`` runs: the package, or ``("-c", code)`` that changes one thing first.
        self.entry = tuple(entry)
        self.proc: subprocess.Popen[bytes] | None = None
        self.scheme = "https" if "--cert" in self.args or "RTC_CERT" in self.env else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, wait: bool = True, timeout: float = 90.0, **extra: str) -> ServerProcess:
        # RTC_DATA_DIR: this process's own store beside its log, kept across its restarts.
        # RTC_THREADS=1 unless the test says otherwise: the suite runs a worker per core, and
        # more backend threads would only spin-wait for cores the other workers hold.
        env = {**os.environ, "RTC_ICE_ADDRESSES": "127.0.0.1", "RTC_ICE_ALLOW_NETWORKS": "127.0.0.0/8",
               "RTC_ICE_SERVERS": "", "RTC_HOST": self.host, "RTC_PORT": str(self.port), "RTC_THREADS": "1",
               "RTC_DATA_DIR": str(self.log_path.with_suffix(".data")), **self.env, **extra}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, *self.entry, *self.args], cwd=ROOT, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        if wait:
            context = None
            if self.scheme == "https":
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            try:
                wait_ready_sync(self.url, lambda: self.proc is not None and self.proc.poll() is None, timeout,
                                context)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}; its log:\n{self.log[-4000:]}") from exc
        return self

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful: every session closes through its normal path), SIGKILL after ``timeout``."""
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elif self.proc is not None:
            code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def get(self, path: str, ok_only: bool = True, port: int | None = None) -> tuple[int, str]:
        url = f"{self.scheme}://{self.host}:{port or self.port}{path}"
        status, body = http_get(url)
        if ok_only and status != 200:
            raise AssertionError(f"GET {url} -> {status}: {body[:300]}")
        return status, body

    def metrics(self, port: int | None = None) -> dict[str, float]:
        return parse_metrics(self.get("/metrics", port=port)[1])

    def metric(self, name: str) -> float:
        """One unlabelled sample from ``/metrics``."""
        return self.metrics()[name]


# ----- TLS -----------------------------------------------------------------------------------------
def self_signed(tmp: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``host`` (an IP), made with ``cryptography`` (aiortc's own dependency)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def open_udp_sockets() -> set[tuple[str, int]]:
    """The UDP sockets this process holds open, as ``(address, port)`` (IPv4 and IPv6).

    Read from ``/proc``: the socket inodes among this process's file descriptors, looked up
    in ``/proc/net/udp{,6}`` (of the process's network namespace). Used to check that a
    session's ICE sockets are really closed when it ends.
    """
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                address, port = fields[1].split(":")
                if len(address) == 8:  # IPv4, little-endian hex
                    address = ".".join(str(b) for b in bytes.fromhex(address)[::-1])
                found.add((address, int(port, 16)))
    return found


class ListSink:
    """A stream sink that keeps every message it is sent (``Stream.add_sink``), for tests
    that drive a stream directly and read what it published."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def close(self) -> None:
        self.closed = True

    def detections(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "detections"]

    def labels_from(self, frame_id: int) -> set[str]:
        """Labels detected in frames ``frame_id`` and later (the stream's received-frame count)."""
        return {d["label"] for m in self.detections() if m["frame_id"] >= frame_id for d in m["detections"]}


# ----- following a stream (durable streams, replicas) ------------------------------------------------
async def first_detection(url: str, stream_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The first detection message on the stream's SSE (``/sessions/{id}/events``)."""
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as http, \
            http.get(f"{url}/sessions/{stream_id}/events") as response:
        assert response.status == 200, await response.text()
        async for raw in response.content:
            line = raw.rstrip(b"\r\n")
            if line.startswith(b"data: "):
                message = json.loads(line[6:])
                if message.get("type") == "detections":
                    return dict(message)
    raise AssertionError("the SSE stream ended without a detection")
