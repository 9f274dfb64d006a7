"""Images per second and time per call against batch size: what batching buys a backend.

The scheduler batches the newest frames of several streams into one call only where that
pays (``RTC_MAX_BATCH`` 0 chooses 1 on a CPU, 8 with a GPU provider). This measures it for
the real model and the detector's whole path (letterbox, one ``session.run`` per batch,
decode + NMS per image), on 640x480 bus frames, batch sizes interleaved round by round so
that load drift hits all sizes alike.

    python -m bench.batch_sizes [--sizes 1,2,4,8] [--rounds 5] [--calls 10] [--threads 0]
        [--providers CPUExecutionProvider]    # e.g. CUDAExecutionProvider where a GPU is lent

A batch of B takes as long as its call: every frame in it waits for the whole batch, so
on a backend where images/s hardly grows with B, batching only adds latency.
"""

from __future__ import annotations

import argparse
import time

from bench.common import bus_rgb, emit, find_model, load, summary, table
from rtc_server.engine.loader import load_detector
from rtc_server.engine.scheduler import plan_workers
from rtc_server.engine.yolo import Thresholds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,2,4,8", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10, help="calls per size per round")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: as one worker would get)")
    parser.add_argument("--providers", default="CPUExecutionProvider", help="comma-separated onnxruntime providers")
    args = parser.parse_args()
    load_start = load()
    threads = args.threads or plan_workers(1, 0).threads
    detector = load_detector(find_model(), backend="onnxruntime", threads=threads,
                             providers=tuple(args.providers.split(",")))
    detector.warmup()
    sizes = [int(s) for s in args.sizes.split(",")]
    frame = bus_rgb()
    per_call: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(args.rounds):
        for b in sizes:
            images, thresholds = [frame] * b, [Thresholds()] * b
            detector.detect(images, thresholds)  # one untimed call after switching size
            for _ in range(args.calls):
                t0 = time.perf_counter()
                detector.detect(images, thresholds)
                per_call[b].append((time.perf_counter() - t0) * 1000)
    rows, results = [], {}
    base = None
    for b in sizes:
        s = summary(per_call[b])
        ips = 1000 * b / s["p50"]
        base = base or ips
        results[b] = {"call_ms": s, "images_per_s": ips}
        rows.append([b, s["p50"], s["iqr"], s["p50"] / b, ips, ips / base])
    print(f"providers {detector.info.providers}, {threads} intra-op thread(s), 640x480 frames")
    print(table(["batch", "call p50 ms", "call IQR ms", "ms per image", "images/s", "vs batch 1"], rows))
    emit("batch_sizes", {"providers": list(detector.info.providers), "threads": threads, "sizes": results},
         load_start)


if __name__ == "__main__":
    main()
