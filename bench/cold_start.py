"""Cold start: process start → ``/readyz`` answers 200 (model loaded and warmed up).

``/readyz`` turns 200 only after the warm-up inference, so this is the time until a new
replica (a restarted container, a scaled-out instance) can serve its first frame at full
speed. Five fresh processes, one after the other; the median is the figure. Also reported:
the first HTTP answer of any kind — the server loads the model before it listens, so that
is imports + model load, and the rest is the warm-up inference.

    python -m bench.cold_start [--runs 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import emit, find_model, http_status, load, save_json, start_server, stop_server, summary, table


def one(model: Path) -> tuple[float, float]:
    server = start_server(model)
    healthy = float("nan")
    try:
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited with {server.process.returncode}")
            status = http_status(server.url + "/readyz", timeout=0.5)
            now = time.perf_counter() - server.started_at
            if status is not None and healthy != healthy:  # first answer at all: it listens
                healthy = now
            if status == 200:
                return healthy, now
            time.sleep(0.005)
        raise TimeoutError("no /readyz 200 within 120 s")
    finally:
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load_start = load()
    model = find_model()
    listening, ready = [], []
    for i in range(args.runs):
        h, r = one(model)
        listening.append(h)
        ready.append(r)
        print(f"  run {i + 1}: listening after {h:.2f} s, ready after {r:.2f} s", flush=True)
    ls, rs = summary(listening), summary(ready)
    print(table(["", "median s", "min s", "max s"],
                [["process start → first HTTP answer", ls["p50"], ls["min"], ls["max"]],
                 ["process start → /readyz 200", rs["p50"], rs["min"], rs["max"]]]))
    out = {"runs": args.runs, "listening_s": ls, "ready_s": rs, "ready_all_s": ready}
    if args.out:
        save_json(args.out, {**out, "load_start": load_start, "load_end": load()})
    emit("cold_start", out, load_start)


if __name__ == "__main__":
    main()
