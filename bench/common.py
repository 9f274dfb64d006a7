"""Shared pieces of the benchmarks: the model, statistics, tables, the server subprocess, sampling.

Every benchmark is run one way, ``python -m bench.<name>`` from the repository root (argparse,
so ``--help`` works), and imports what it shares from here: the model lookup, the server
spawner and the samplers exist once. Every benchmark prints a table for people and then
exactly one JSON line for machines (``emit``). The machine these run on is shared and
noisy, so every result carries the load average at its start and end (``load()``), and
conclusions come from ratios measured within one run, not from absolute figures compared
across runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "bus.jpg"
#: Loopback only: benchmarks never send traffic anywhere else.
LOOPBACK = "127.0.0.1"


def find_model(explicit: str | Path | None = None) -> Path:
    """The real YOLO11n export, found the way the tests find it.

    In order: ``explicit`` (a bench's ``--model``), ``$RTC_TEST_MODEL`` (the tests'),
    ``$RTC_MODEL`` where it names a file (the server's own setting), ``../shared/models/``
    (CI), ``models/`` (``make model``). Exits with a message, not a traceback, when none is there.
    """
    candidates = [explicit or "", os.environ.get("RTC_TEST_MODEL", ""), os.environ.get("RTC_MODEL", ""),
                  ROOT.parent / "shared/models/yolo11n.onnx", ROOT / "models/yolo11n.onnx"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise SystemExit("no model: pass --model, set RTC_TEST_MODEL or run `make model`")


def bus_rgb(width: int = 640, height: int = 480) -> np.ndarray:
    """The bus fixture resized to ``width x height``, RGB uint8: the frame every benchmark sends."""
    import cv2

    bgr = cv2.imread(str(FIXTURE), cv2.IMREAD_COLOR)
    bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


# ----- statistics ------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread: the numbers every table reports (empty input gives NaNs)."""
    if not values:
        nan = float("nan")
        return {"n": 0, "p50": nan, "p95": nan, "p99": nan, "min": nan, "max": nan, "iqr": nan}
    a = np.asarray(values, dtype=np.float64)
    q25, p50, q75, p95, p99 = np.percentile(a, [25, 50, 75, 95, 99])
    return {"n": int(a.size), "p50": float(p50), "p95": float(p95), "p99": float(p99),
            "min": float(a.min()), "max": float(a.max()), "iqr": float(q75 - q25)}


def slope_per_minute(times_s: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against time, per minute (0 = latency does not grow)."""
    if len(values) < 2:
        return float("nan")
    slope, _ = np.polyfit(np.asarray(times_s, dtype=np.float64), np.asarray(values, dtype=np.float64), 1)
    return float(slope * 60.0)


def rounded(obj: Any, digits: int = 3) -> Any:
    """Round floats recursively for a readable JSON line."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


# ----- output ------------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table (pastes straight into docs/benchmarks.md)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def emit(name: str, result: dict[str, Any], load_start: list[float]) -> None:
    """The one final JSON line, with machine and load attached."""
    line = {"bench": name, **result, "env": environment(), "load_start": load_start, "load_end": load()}
    print(json.dumps(rounded(line), separators=(",", ":")), flush=True)


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rounded(data), indent=1))


# ----- the server as a subprocess ----------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class Server:
    """``python -m rtc_server`` on a free loopback port, ICE pinned to 127.0.0.1.

    Its stdout and stderr go to a log file, not a pipe: a pipe nobody reads fills up and
    stalls a chatty server mid-benchmark. ``log()`` reads it back (after ``stop_server``, or
    when the server died before ``/readyz``).
    """

    process: subprocess.Popen[bytes]
    port: int
    started_at: float
    log_path: Path
    ready_after_s: float = float("nan")
    returncode: int | None = None
    _log_text: str | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of what the server wrote."""
        if self._log_text is not None:
            return self._log_text[-tail:]
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-tail:]
        return ""


def start_server(model: Path, *, extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 module: str = "rtc_server", cwd: Path = ROOT) -> Server:
    """``python -m <module> --host 127.0.0.1 --port <free> --model <model>``, not yet ready.

    ``module``: another entry point with the server's flags (``bench.naive_server``,
    ``bench._probe_server``). ``cwd``: where ``<module>`` is imported from (an older tree
    exported from git, for ``bench.experiments``). ``env`` overrides the defaults below.
    """
    port = free_port()
    # A load generator is one client address by design: no per-client rate limit or quota,
    # and room for every benchmark peer (RTC_MAX_SESSIONS defaults to 16). Older trees
    # (bench.experiments) ignore the variables they do not know.
    child_env = {**os.environ, "RTC_ICE_ADDRESSES": LOOPBACK, "RTC_ICE_ALLOW_NETWORKS": "127.0.0.0/8",
                 "RTC_LOG_LEVEL": "WARNING", "RTC_RATE_LIMIT": "0", "RTC_PREDICT_RATE_LIMIT": "0",
                 "RTC_MAX_SESSIONS": "64", "RTC_MAX_SESSIONS_PER_CLIENT": "0", "RTC_MAX_PULLS_PER_CLIENT": "0",
                 **(env or {})}
    fd, log_name = tempfile.mkstemp(prefix=f"bench-{module.replace('.', '-')}-{port}-", suffix=".log")
    started = time.perf_counter()
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--host", LOOPBACK, "--port", str(port), "--model", str(model),
             *extra_args],
            cwd=cwd, env=child_env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    return Server(process, port, started, Path(log_name))


def wait_ready(server: Server, timeout: float = 60.0, poll_s: float = 0.01) -> float:
    """Poll ``/readyz`` until 200; seconds from process start (also stored on the server)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}: {server.log(2000)}")
        if http_status(server.url + "/readyz", timeout=0.5) == 200:
            server.ready_after_s = time.perf_counter() - server.started_at
            return server.ready_after_s
        time.sleep(poll_s)
    raise TimeoutError(f"/readyz not 200 within {timeout} s: {server.log(2000)}")


def stop_server(server: Server, timeout: float = 15.0) -> int:
    """SIGTERM (the server's graceful shutdown), SIGKILL after ``timeout``; the exit code."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    server.returncode = server.process.returncode
    if server._log_text is None:
        server._log_text = server.log(1 << 16)
        server.log_path.unlink(missing_ok=True)
    return server.returncode


@contextlib.contextmanager
def running_server(model: Path, **kwargs: Any) -> Iterator[Server]:
    """A ready server for the ``with`` block, stopped (SIGTERM) after it."""
    server = start_server(model, **kwargs)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


# ----- CPU / RSS sampling -------------------------------------------------------------------
@dataclass
class ProcessSampler:
    """Samples a process's CPU (% of one core) and RSS from a background thread.

    A thread, not a task: it must keep sampling even while the event loop is busy.
    """

    pid: int
    interval_s: float = 1.0
    cpu_percent: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ProcessSampler:
        self._process = psutil.Process(self.pid)
        self._process.cpu_percent(None)
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self._process.oneshot():
                    self.cpu_percent.append(self._process.cpu_percent(None))
                    self.rss_mb.append(self._process.memory_info().rss / 2**20)
            except psutil.Error:
                return

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        cpu = summary(self.cpu_percent)
        return {"cpu_pct_mean": float(np.mean(self.cpu_percent)) if self.cpu_percent else float("nan"),
                "cpu_pct_p95": cpu["p95"],
                "rss_mb_max": max(self.rss_mb) if self.rss_mb else float("nan"),
                "rss_mb_last": self.rss_mb[-1] if self.rss_mb else float("nan")}
