"""Image size, build time and cold start (``docker run`` -> ``/readyz`` 200) of the real image.

Uses the same private dockerd and debootstrap base as ``tests/test_container.py`` (root,
overlay). Cold start is timed from just before ``docker run`` to the first 200 from
``/readyz`` (model loaded and warmed up); ``stop`` is ``docker stop -t 10`` with no session.

    sudo .venv/bin/python -m bench.container --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.containers import PrivateDocker, unavailable
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


def cold_start(docker: PrivateDocker, image: str) -> tuple[float, float]:
    """Seconds from ``docker run`` to ``/readyz`` 200, and for ``docker stop`` to return."""
    port = free_port()
    started = time.perf_counter()
    cid = docker.docker("run", "-d", "--network", "host", "-e", f"PORT={port}",
                        "-e", "RTC_ICE_ADDRESSES=127.0.0.1", image).stdout.decode().strip()
    try:
        while not ready(f"http://127.0.0.1:{port}/readyz"):
            if time.perf_counter() - started > 120:
                raise RuntimeError("not ready after 120 s")
            time.sleep(0.02)
        ready_s = time.perf_counter() - started
        stopping = time.perf_counter()
        docker.docker("stop", "-t", "10", cid)
        return ready_s, time.perf_counter() - stopping
    finally:
        docker.docker("rm", "-f", cid, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    docker = PrivateDocker()
    docker.start()
    try:
        base = docker.import_base()
        t0 = time.perf_counter()
        image = docker.build(ROOT, "rtc-yolo:bench", {"BASE": base})
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        docker.build(ROOT, "rtc-yolo:bench", {"BASE": base})
        rebuild_s = time.perf_counter() - t0
        size = int(docker.docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
        base_size = int(docker.docker("image", "inspect", "-f", "{{.Size}}", base).stdout)
        runs = [cold_start(docker, image) for _ in range(args.runs)]
    finally:
        docker.stop()
    starts = [r[0] for r in runs]
    stops = [r[1] for r in runs]
    print(json.dumps({
        "image_mb": round(size / 1e6, 1), "base_image_mb": round(base_size / 1e6, 1),
        "build_s_empty_cache": round(build_s, 1), "rebuild_s_cached": round(rebuild_s, 2),
        "cold_start_s": [round(s, 2) for s in starts], "cold_start_median_s": round(statistics.median(starts), 2),
        "stop_s": [round(s, 2) for s in stops],
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
