"""Ultralytics' own ``YOLO(onnx).predict`` loop on one frame, timed; prints one JSON line.

Runs in the separate ``.venv-bench`` (Ultralytics brings torch; the service does not), so
it imports nothing from this repository. ``bench.alternatives`` starts it inside a new
network namespace with no interfaces up (``unshare --net``), because Ultralytics probes
the internet at import (``is_online``) and the benchmark must stay on loopback.

    .venv-bench/bin/python -m bench.ultralytics_loop MODEL IMAGE --duration 30
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    import torch
    import ultralytics
    from ultralytics import YOLO

    t0 = time.perf_counter()
    model = YOLO(args.model, task="detect")
    frame = cv2.resize(cv2.imread(args.image), (args.width, args.height), interpolation=cv2.INTER_AREA)
    model.predict(frame, imgsz=640, verbose=False)  # warm-up: loads the onnxruntime session
    load_s = time.perf_counter() - t0
    latency_ms: list[float] = []
    stages: list[dict[str, float]] = []
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < args.duration:
        t = time.perf_counter()
        results = model.predict(frame, imgsz=640, verbose=False)
        latency_ms.append((time.perf_counter() - t) * 1000)
        stages.append(results[0].speed)
        count += len(results[0].boxes)
    elapsed = time.perf_counter() - start
    a = np.asarray(latency_ms)
    print(json.dumps({
        "ultralytics": ultralytics.__version__, "torch": torch.__version__,
        "load_and_warmup_s": load_s, "calls": len(latency_ms), "elapsed_s": elapsed,
        "latency_ms": latency_ms, "p50": float(np.median(a)),
        "stage_p50_ms": {k: float(np.median([s[k] for s in stages])) for k in stages[0]},
        "input_hw": list(results[0].orig_shape), "boxes_last": len(results[0].boxes),
    }))


if __name__ == "__main__":
    main()
