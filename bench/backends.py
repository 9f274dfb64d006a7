"""Backend x precision on this machine: speed at 480x640 and 640x640, accuracy, auto's choice.

One run, one table. Every path loads the same model through ``rtc_server.engine.loader``
and runs its raw backend (``YoloDetector.infer``: blob in, raw output out — what the model
costs; ``bench.model_floor`` measures the whole per-frame path against it). The paths take
turns in blocks of ``--block`` back-to-back frames (as a server runs one backend: single
frames in turn let one runtime's idle spinning threads slow the next), the order
alternating each round, so background load on a shared machine hits all alike and the
speed-ups (ratios to onnxruntime FP32 in the same run) stay meaningful.
mAP50-95 / mAP50 come from the accuracy record (``python -m bench.accuracy --write``);
"auto" is what ``RTC_BACKEND=auto`` chooses here, by its own start-up trials.

    python -m bench.backends [--iters 60] [--threads 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import bus_rgb, emit, find_model, load, save_json, summary, table
from rtc_server.engine import accuracy
from rtc_server.engine.artifacts import artifact_sha256, int8_path, sha256_of
from rtc_server.engine.detector import ModelError, YoloDetector
from rtc_server.engine.loader import load_detector
from rtc_server.engine.opening import open_detector
from rtc_server.engine.yolo import Letterbox

PATHS = (("onnxruntime", "f32"), ("openvino", "f32"), ("openvino", "bf16"), ("openvino", "f16"),
         ("openvino", "int8"))
#: (H, W): a 640x480 camera frame at rect 640, and the square letterbox.
SIZES = ((480, 640), (640, 640))
TARGET_SPEEDUP = 2.0


def blob_for(detector: YoloDetector, hw: tuple[int, int]) -> np.ndarray:
    image = bus_rgb(hw[1], hw[0])
    return detector.blob(image, Letterbox.fit(hw[1], hw[0], shape=hw))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--iters", type=int, default=60, help="timed runs per path and size")
    parser.add_argument("--block", type=int, default=10, help="back-to-back runs per path before switching")
    parser.add_argument("--threads", type=int, default=0, help="backend threads (0: one per core)")
    parser.add_argument("--out", type=Path, default=None, help="also write the full results here (JSON)")
    args = parser.parse_args()
    load_start = load()
    model = find_model(args.model)
    sha = sha256_of(model)
    int8 = int8_path(model)

    detectors: dict[tuple[str, str], YoloDetector] = {}
    skipped: dict[tuple[str, str], str] = {}
    for backend, precision in PATHS:
        try:
            detectors[backend, precision] = open_detector(model, backend, precision, sha256=sha, imgsz=640,
                                                          rect=True, threads=args.threads, providers=(),
                                                          cache_dir=None)
        except ModelError as exc:
            skipped[backend, precision] = str(exc).removeprefix(f"{model}: ")
            print(f"  {backend} {precision}: not run here: {skipped[backend, precision]}", flush=True)

    times: dict[tuple[str, str, tuple[int, int]], list[float]] = {}
    for hw in SIZES:
        blobs = {key: blob_for(d, hw) for key, d in detectors.items()}
        for key, d in detectors.items():
            for _ in range(3):  # first runs allocate
                d.infer(blobs[key])
            times[(*key, hw)] = []
        keys = list(detectors)
        for round_ in range(max(1, args.iters // args.block)):
            # Blocks of back-to-back runs, as a server runs one backend; the order alternates
            # so a load change hits every path alike. One untimed run after each switch.
            for key in keys if round_ % 2 == 0 else keys[::-1]:
                d = detectors[key]
                d.infer(blobs[key])
                for _ in range(args.block):
                    t0 = time.perf_counter()
                    d.infer(blobs[key])
                    times[(*key, hw)].append((time.perf_counter() - t0) * 1000)

    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    auto = load_detector(model, threads=args.threads, cache_dir=None)  # its own trials, as at start-up
    auto_s = time.perf_counter() - started
    chosen = (auto.info.backend, auto.info.precision)

    rows, results = [], []
    for key, d in detectors.items():
        artifact = artifact_sha256(int8) if key[1] == "int8" else None
        v = accuracy.verdict(sha, *key, artifact)
        r: dict[str, Any] = {"backend": key[0], "precision": d.info.precision, "auto": key == chosen,
                             "eligible": v.eligible, "reason": v.reason, "map50_95": v.map50_95, "map50": v.map50}
        cells: list[Any] = [key[0], d.info.precision]
        for hw in SIZES:
            s = summary(times[(*key, hw)])
            ref = summary(times[("onnxruntime", "f32", hw)])
            tag = f"{hw[0]}x{hw[1]}"
            r[tag] = {"ms": s, "speedup": ref["p50"] / s["p50"]}
            cells += [s["p50"], s["p95"], f"{ref['p50'] / s['p50']:.2f}x"]
        cells += ["-" if v.map50_95 is None else f"{v.map50_95:.4f}", "-" if v.map50 is None else f"{v.map50:.4f}",
                  "yes" if v.eligible else f"no: {v.reason}", "**auto**" if key == chosen else ""]
        rows.append(cells)
        results.append(r)
    headers = ["backend", "precision"]
    for hw in SIZES:
        headers += [f"{hw[0]}x{hw[1]} p50 ms", "p95 ms", "speed-up"]
    headers += ["mAP50-95", "mAP50", "auto may run it", "auto chose"]
    print(table(headers, rows))
    auto_row = next((r for r in results if r["auto"]), None)
    speedup = auto_row["480x640"]["speedup"] if auto_row else float("nan")
    loss = None
    if auto_row and auto_row["map50_95"] is not None:
        ref_map = next(r["map50_95"] for r in results if (r["backend"], r["precision"]) == accuracy.REFERENCE)
        loss = (ref_map - auto_row["map50_95"]) * 100 if ref_map is not None else None
    print(f"auto chose {chosen[0]} {chosen[1]} (its trials took {auto_s:.2f} s with loading): "
          f"{speedup:.2f}x onnxruntime f32 at 480x640 (target ≥ {TARGET_SPEEDUP}x), "
          f"mAP50-95 loss {'-' if loss is None else f'{loss:.2f}'} points (bound {accuracy.BOUND_POINTS})")
    out = {"iters": args.iters, "threads": args.threads, "results": results, "skipped": {
        f"{k[0]} {k[1]}": v for k, v in skipped.items()}, "auto": {"backend": chosen[0], "precision": chosen[1],
        "speedup_480x640": speedup, "loss_points": loss, "load_and_trials_s": auto_s,
        "trials": auto.auto_trials}, "target_met": speedup >= TARGET_SPEEDUP and loss is not None
        and loss <= accuracy.BOUND_POINTS}
    if args.out:
        save_json(args.out, {**out, "load_start": load_start, "load_end": load()})
    emit("backends", out, load_start)


if __name__ == "__main__":
    main()
