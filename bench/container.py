"""Image size, build time and cold start (``docker run`` -> ``/readyz`` 200) of the real image.

Uses the same private dockerd and debootstrap base as ``tests/test_container.py`` (root,
overlay). Cold start is timed from just before ``docker run`` to the first 200 from
``/readyz`` (model loaded and warmed up); ``stop`` is ``docker stop -t 10`` with no session.

    sudo .venv/bin/python -m bench.container --runs 5

A table, then one JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench.common import LOOPBACK, ROOT, emit, free_port, http_status, load, table
from tests.containers import PrivateDocker, unavailable


def cold_start(docker: PrivateDocker, image: str) -> tuple[float, float]:
    """Seconds from ``docker run`` to ``/readyz`` 200, and for ``docker stop`` to return."""
    port = free_port()
    started = time.perf_counter()
    cid = docker.docker("run", "-d", "--network", "host", "-e", f"PORT={port}",
                        "-e", f"RTC_ICE_ADDRESSES={LOOPBACK}", "-e", "RTC_ICE_ALLOW_NETWORKS=127.0.0.0/8",
                        image).stdout.decode().strip()
    try:
        while http_status(f"http://{LOOPBACK}:{port}/readyz", timeout=2) != 200:
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load_start = load()
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
    result = {
        "image_mb": size / 1e6, "base_image_mb": base_size / 1e6,
        "build_s_empty_cache": build_s, "rebuild_s_cached": rebuild_s,
        "cold_start_s": starts, "cold_start_median_s": statistics.median(starts), "stop_s": stops,
    }
    print(table(["figure", "value"], [
        ["image size MB (base MB)", f"{size / 1e6:.1f} ({base_size / 1e6:.1f})"],
        ["build, empty cache s", build_s], ["rebuild, nothing changed s", rebuild_s],
        ["cold start s (median)", f"{', '.join(f'{s:.2f}' for s in starts)} ({statistics.median(starts):.2f})"],
        ["docker stop -t 10 s", ", ".join(f"{s:.2f}" for s in stops)],
    ]))
    emit("container", result, load_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
