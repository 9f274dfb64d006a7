"""Ours against the alternatives: same machine, same model, same 640x480 bus frames.

1. **ours** — one aiortc peer at 30 fps to ``python -m rtc_server`` (newest-frame mailbox).
2. **naive aiortc** — the same peer to ``bench.naive_server``: every frame processed in
   order, nothing dropped (the usual aiortc example). Its latency grows for as long as the
   stream lasts when the model is slower than the camera.
3. **seed-style HTTP** — JPEG-encode a frame, ``POST /predict`` to our own server over one
   HTTP/1.1 keep-alive connection, wait, repeat (one request in flight, as a page polling
   with ``fetch`` does). Latency runs from the newest 30 fps camera tick before the request
   (the frame's capture) to the answer, so it counts the frame's age and the JPEG encode,
   as a page would pay them.
4. **Ultralytics** — ``YOLO(onnx).predict`` in a loop, in ``.venv-bench`` (``make bench-venv``),
   inside a fresh network namespace; skipped, saying why, when that venv is missing.

Each runs for ``--duration`` seconds, one after the other, so they never compete with each
other for the two cores; the load average is recorded with each.

    python -m bench.alternatives [--duration 30]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from bench.common import (
    FIXTURE,
    LOOPBACK,
    ROOT,
    ProcessSampler,
    emit,
    find_model,
    load,
    running_server,
    save_json,
    slope_per_minute,
    summary,
    table,
)
from bench.peers import aggregate, camera_frames, run_peers

#: Ultralytics' venv; the Makefile passes its BENCH_VENV here.
BENCH_VENV = Path(os.environ.get("BENCH_VENV") or ROOT / ".venv-bench")
CAMERA_FPS = 30.0


def webrtc(model: Path, module: str, duration: float) -> dict[str, Any]:
    load_start = load()
    with running_server(model, module=module) as server:
        sampler = ProcessSampler(server.pid).start()
        results = asyncio.run(run_peers(server.url, 1, duration))
        usage = sampler.stop()
    out = aggregate(results)
    (peer,) = results
    return {"latency_ms": out["latency_ms"], "rate_per_s": out["total_detections_per_s"],
            "slope_ms_per_min": out["slope_ms_per_min"], "inference_ms": out["inference_ms"],
            "frames_sent": out["frames_sent"], "server": usage, "load_start": load_start, "load_end": load(),
            "errors": out["errors"], "_series": {"t": peer.times_s, "latency_ms": peer.latency_ms}}


def http_predict(model: Path, duration: float) -> dict[str, Any]:
    load_start = load()
    frames = camera_frames()
    with running_server(model) as server:
        sampler = ProcessSampler(server.pid).start()
        conn = http.client.HTTPConnection(LOOPBACK, server.port, timeout=30)
        latency, rtt, encode_ms, times, inference = [], [], [], [], []
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < duration:
            t0 = time.perf_counter()
            # The page grabs the camera's newest frame, captured at the last 30 fps tick: its
            # age counts, as it does for a WebRTC frame waiting in the mailbox.
            captured = start + int((t0 - start) * CAMERA_FPS) / CAMERA_FPS
            _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frames[i % len(frames)], cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, 90])
            t1 = time.perf_counter()
            conn.request("POST", "/predict", body=jpeg.tobytes(), headers={"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            body = json.loads(response.read())
            t2 = time.perf_counter()
            assert response.status == 200 and body["detections"], body
            latency.append((t2 - captured) * 1000)
            rtt.append((t2 - t0) * 1000)
            inference.append(body["timing"]["inference_ms"])
            encode_ms.append((t1 - t0) * 1000)
            times.append(t0 - start)
            i += 1
        elapsed = time.perf_counter() - start
        conn.close()
        usage = sampler.stop()
    return {"latency_ms": summary(latency), "rate_per_s": len(latency) / elapsed,
            "slope_ms_per_min": slope_per_minute(times, latency), "jpeg_encode_ms": summary(encode_ms),
            "request_ms": summary(rtt), "inference_ms": summary(inference), "jpeg_bytes": len(jpeg),
            "server": usage, "load_start": load_start, "load_end": load()}


def ultralytics(model: Path, duration: float) -> dict[str, Any]:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        return {"skipped": f"{python} missing: run `make bench-venv` first"}
    unshare = shutil.which("unshare")
    if unshare is None:
        return {"skipped": "unshare(1) not found: cannot isolate Ultralytics from the network"}
    load_start = load()
    with tempfile.TemporaryDirectory() as config_dir:
        env = {**os.environ, "YOLO_CONFIG_DIR": config_dir, "YOLO_OFFLINE": "1"}
        # A new network namespace with only a down `lo`: Ultralytics' online checks fail fast.
        # `-m` from the repository root, like every bench: bench/__init__.py imports nothing.
        command = [unshare, "--net", str(python), "-m", "bench.ultralytics_loop", str(model),
                   str(FIXTURE), "--duration", str(duration)]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=duration + 300,
                              check=False)
    if done.returncode != 0:
        return {"skipped": f"ultralytics loop failed ({done.returncode}): {done.stderr[-1500:]}"}
    data = json.loads(done.stdout.strip().splitlines()[-1])
    latency = data.pop("latency_ms")
    return {"latency_ms": summary(latency), "rate_per_s": data["calls"] / data["elapsed_s"],
            "slope_ms_per_min": float("nan"), "inference_ms": {"p50": data["stage_p50_ms"]["inference"]},
            **data, "load_start": load_start, "load_end": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per contender")
    parser.add_argument("--only", default="ours,naive,http,ultralytics", help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=None, help="also write full results (with series) here")
    args = parser.parse_args()
    load_start = load()
    model = find_model()
    wanted = args.only.split(",")
    runs: dict[str, dict[str, Any]] = {}
    contenders = {
        "ours": lambda: webrtc(model, "rtc_server", args.duration),
        "naive": lambda: webrtc(model, "bench.naive_server", args.duration),
        "http": lambda: http_predict(model, args.duration),
        "ultralytics": lambda: ultralytics(model, args.duration),
    }
    labels = {"ours": "ours: WebRTC, newest frame", "naive": "naive aiortc: every frame in order",
              "http": "seed-style: POST /predict keep-alive", "ultralytics": "Ultralytics YOLO(onnx).predict loop"}
    for name in wanted:
        print(f"  {labels[name]} for {args.duration:.0f} s ...", flush=True)
        runs[name] = contenders[name]()
    rows = []
    for name, r in runs.items():
        if "skipped" in r:
            rows.append([labels[name], "skipped", "", "", "", "", "", ""])
            continue
        lat = r["latency_ms"]
        inference_p50 = r["inference_ms"]["p50"]
        rows.append([labels[name], lat["p50"], lat["p95"], lat["p99"], lat["max"], r["slope_ms_per_min"],
                     r["rate_per_s"], inference_p50, lat["p50"] - inference_p50,
                     r["rate_per_s"] * inference_p50 / 1000, "/".join(map(str, r["load_start"]))])
    print(table(["pattern", "p50 ms", "p95 ms", "p99 ms", "max ms", "slope ms/min", "results/s",
                 "inference p50 ms", "p50 − inference", "model busy", "load 1/5/15"], rows))
    for name, r in runs.items():
        if "skipped" in r:
            print(f"{name}: skipped — {r['skipped']}")
    if args.out:
        save_json(args.out, {"duration_s": args.duration, "runs": runs, "load_start": load_start,
                             "load_end": load()})
    emit("alternatives", {"duration_s": args.duration,
                          "runs": {k: {kk: vv for kk, vv in v.items() if kk != "_series"} for k, v in runs.items()}},
         load_start)


if __name__ == "__main__":
    main()
