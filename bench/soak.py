"""Soak benchmark (issue 7): 300 sessions connect, stream briefly and leave — half one
after another, half in parallel batches, every 4th by vanishing — against a server
process whose threads, fds and RSS are read from /proc before, during and after.

    .venv/bin/python bench/soak.py [--sessions 300] [--batch 10] [--abrupt-every 4]

Prints a table, then one JSON line (the summary). Loopback only: the server is started
with RTC_ICE_ADDRESSES=127.0.0.1 and the clients are pinned to 127.0.0.1 too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.soak import run_soak  # noqa: E402
from rtc_server.webrtc.ice import use_host_addresses  # noqa: E402


def default_model() -> Path:
    for candidate in (os.environ.get("RTC_MODEL", ""), ROOT.parent / "shared/models/yolo11n.onnx",
                      ROOT / "models/yolo11n.onnx"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit("no model: run `make model` or set RTC_MODEL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            try:
                async with http.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--abrupt-every", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2,
                        help="repeat the soak on the same server: growth in later rounds tells a leak "
                             "from the allocator's high-water mark")
    parser.add_argument("--idle-timeout", type=float, default=3.0,
                        help="server RTC_IDLE_TIMEOUT: how soon a vanished client's session is reaped")
    args = parser.parse_args()

    use_host_addresses(["127.0.0.1"])
    port = free_port()
    env = {**os.environ, "RTC_MODEL": str(default_model()), "RTC_ICE_ADDRESSES": "127.0.0.1",
           "RTC_HOST": "127.0.0.1", "RTC_PORT": str(port), "RTC_RATE_LIMIT": "0", "RTC_MAX_SESSIONS": "0",
           "RTC_IDLE_TIMEOUT": str(args.idle_timeout), "RTC_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "rtc_server"], cwd=ROOT, env=env)  # noqa: ASYNC220
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, proc)
        bus = cv2.cvtColor(cv2.imread(str(ROOT / "tests/fixtures/bus.jpg")), cv2.COLOR_BGR2RGB)
        frame = cv2.resize(bus, (640, 480))
        started = time.monotonic()
        reports = []
        for n in range(args.rounds):
            print(f"round {n + 1}/{args.rounds}", flush=True)
            reports.append(await run_soak(
                base, proc.pid, frame, sessions=args.sessions, batch=args.batch, abrupt_every=args.abrupt_every,
                progress=lambda s: print(f"  {s} ({time.monotonic() - started:.0f} s)", flush=True)))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    for n, report in enumerate(reports):
        print(f"\nround {n + 1}")
        print(report.table())
    summary = reports[-1].summary()
    summary["rounds"] = [r.summary() for r in reports]
    summary["rss_growth_by_round_mb"] = [r.summary()["rss_growth_mb"] for r in reports]
    summary["server_exit_code"] = code
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
