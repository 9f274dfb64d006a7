"""Cold start: process start → ``/readyz`` answers 200 (model loaded and warmed up).

``/readyz`` turns 200 only after the warm-up inference, so this is the time until a new
replica (a restarted container, a scaled-out instance) can serve its first frame at full
speed. Five fresh processes per configuration, the configurations interleaved; the median
is the figure. Also reported: the first HTTP answer of any kind — the server loads the
model before it listens, so that is imports + model load (+ auto's trials), and the rest
is the warm-up inference.

Configurations (issue 11): ``RTC_BACKEND=auto`` with its cache already holding this
machine's choice (every start after the first), ``auto`` with an empty cache (a machine's
first start: the trials and OpenVINO's compile), and ``onnxruntime`` alone (no choice).

    python -m bench.cold_start [--runs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import emit, find_model, http_status, load, save_json, start_server, stop_server, summary, table


def one(model: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    server = start_server(model, env=env)
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
    with tempfile.TemporaryDirectory(prefix="rtc-cold-") as tmp:
        cached = {"RTC_BACKEND_CACHE": f"{tmp}/cached"}
        one(model, cached)  # the machine's first start fills the cache; not counted
        configs = {"auto (cached choice)": lambda i: cached,
                   "auto (empty cache: trials)": lambda i: {"RTC_BACKEND_CACHE": f"{tmp}/empty{i}"},
                   "onnxruntime only": lambda i: {"RTC_BACKEND": "onnxruntime", "RTC_BACKEND_CACHE": "none"}}
        listening: dict[str, list[float]] = {c: [] for c in configs}
        ready: dict[str, list[float]] = {c: [] for c in configs}
        for i in range(args.runs):
            for name, env in configs.items():
                h, r = one(model, env(i))
                listening[name].append(h)
                ready[name].append(r)
                print(f"  run {i + 1} {name}: listening after {h:.2f} s, ready after {r:.2f} s", flush=True)
    rows, out = [], {"runs": args.runs, "configs": {}}
    for name in configs:
        ls, rs = summary(listening[name]), summary(ready[name])
        rows += [[name, "process start → first HTTP answer", ls["p50"], ls["min"], ls["max"]],
                 [name, "process start → /readyz 200", rs["p50"], rs["min"], rs["max"]]]
        out["configs"][name] = {"listening_s": ls, "ready_s": rs, "ready_all_s": ready[name]}
    print(table(["backend", "", "median s", "min s", "max s"], rows))
    main_config = out["configs"]["auto (cached choice)"]
    out.update(listening_s=main_config["listening_s"], ready_s=main_config["ready_s"])
    if args.out:
        save_json(args.out, {**out, "load_start": load_start, "load_end": load()})
    emit("cold_start", out, load_start)


if __name__ == "__main__":
    main()
