"""Hostile HTTP clients (issue 20): what junk JPEG bodies sent to ``/predict`` cost the server —
the worst ``/healthz`` answer while they are handled (the event loop), how long the junk
requests take to be answered, and the server process's RSS growth.

Bodies (16 MiB each, the default ``RTC_MAX_BODY_BYTES``), all starting with a JPEG SOI marker:

- ``markers_junk``: ``FF 00 "junk"`` repeated — markers and junk;
- ``fill_ff``: nothing but ``0xFF`` fill bytes (Pillow's header reader walks them one by one);
- ``tiny_segments``: empty ``APP1`` segments, one after another, and never a frame header.

Each is sent ``--parallel`` times at once (threads, loopback only), then once more alone
(``--parallel 1``). ``/healthz`` is asked every 50 ms from a thread of this process; a probe
that gets no answer within 5 s counts as 5 s. ``--tree DIR`` runs the server from another
checkout (the code before the fix: ``git archive d02410f | tar -x -C /tmp/before``). Every
request has a deadline (``--timeout``), so a run is bounded even against the old code.

    python -m bench.hostile_http [--tree /tmp/before] [--parallel 4] [--timeout 120]
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import ROOT, emit, find_model, load, running_server, table
from tests.hostile_media import HealthProbe

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BODY_BYTES = 16 * 2**20 - 64


def bodies() -> dict[str, bytes]:
    return {
        "markers_junk": b"\xff\xd8" + b"\xff\x00junk" * (BODY_BYTES // 6),
        "fill_ff": b"\xff\xd8" + b"\xff" * BODY_BYTES,
        "tiny_segments": b"\xff\xd8" + b"\xff\xe1\x00\x02" * (BODY_BYTES // 4),
    }


def post_image(base: str, body: bytes, timeout: float) -> tuple[int, float]:
    """(status, seconds) of one ``POST /predict``; status 0 when it got no answer in time."""
    request = urllib.request.Request(base + "/predict", data=body, method="POST",
                                     headers={"Content-Type": "image/jpeg"})
    started = time.monotonic()
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    except OSError:
        status = 0
    return status, time.monotonic() - started


def attack(base: str, pid: int, name: str, body: bytes, parallel: int, timeout: float) -> dict[str, Any]:
    answers: list[tuple[int, float]] = []
    lock = threading.Lock()

    def one() -> None:
        answer = post_image(base, body, timeout)
        with lock:
            answers.append(answer)

    with HealthProbe(base, pid) as probe:
        threads = [threading.Thread(target=one) for _ in range(parallel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 10)
        time.sleep(0.5)  # what it left behind
    statuses: dict[str, int] = {}
    for status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"body": name, "parallel": parallel, "statuses": statuses,
            "slowest_answer_s": max((s for _, s in answers), default=float("nan")),
            "healthz_worst_s": probe.worst, "healthz_failures": probe.failures,
            "rss_growth_mb": probe.rss_growth / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout the server runs from")
    parser.add_argument("--parallel", type=int, default=4, help="junk bodies sent at once")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each request may take")
    parser.add_argument("--bodies", default=",".join(bodies()), help="which bodies, comma-separated")
    args = parser.parse_args()
    load_start = load()
    chosen = [b for b in args.bodies.split(",") if b]
    results = []
    env = {"RTC_PREDICT_RATE_LIMIT": "0"}
    with running_server(find_model(), env=env, cwd=args.tree.resolve()) as server:
        time.sleep(2.0)  # settle after start
        all_bodies = bodies()
        for name in chosen:
            for parallel in sorted({1, args.parallel}):
                results.append(attack(server.url, server.pid, name, all_bodies[name], parallel, args.timeout))
                time.sleep(1.0)
    rows = [[r["body"], r["parallel"], " ".join(f"{k}x{v}" for k, v in sorted(r["statuses"].items())),
             f"{r['slowest_answer_s']:.2f}", f"{r['healthz_worst_s']:.3f}", r["healthz_failures"],
             f"{r['rss_growth_mb']:.0f}"] for r in results]
    print(table(["body", "parallel", "statuses", "slowest answer s", "worst /healthz s", "failed /healthz",
                 "RSS growth MiB"], rows))
    emit("hostile_http", {"tree": str(args.tree), "results": results}, load_start)


if __name__ == "__main__":
    main()
