"""onnxruntime intra-op threads on a crowded host: 1 thread vs 2, with and without spinning.

onnxruntime's intra-op workers spin while they wait for each other. On a machine of its own
that saves wake-up latency; on 2 cores shared with other busy processes, one of the two
workers is often descheduled and the other spins for nothing. The three sessions run the
same tensor in turn, frame by frame, so they see the same load.

    python -m bench.threads [--iters 40]
"""

from __future__ import annotations

import argparse
import time

import onnxruntime as ort

from bench.common import bus_rgb, emit, find_model, load, summary, table
from rtc_server.engine.yolo import Letterbox, to_blob

VARIANTS = ((1, True), (2, True), (2, False))


def session(threads: int, spin: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(find_model()), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=40)
    args = parser.parse_args()
    load_start = load()
    blob = to_blob(Letterbox.fit(640, 480).apply(bus_rgb()))
    sessions = {v: session(*v) for v in VARIANTS}
    times: dict[tuple[int, bool], list[float]] = {v: [] for v in VARIANTS}
    for i in range(args.iters + 3):
        for variant, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: blob})
            if i >= 3:
                times[variant].append((time.perf_counter() - t0) * 1000)
    stats = {f"threads={t} spin={int(sp)}": summary(v) for (t, sp), v in times.items()}
    print(table(["640x480 rect floor", "p50 ms", "IQR ms", "p95 ms"],
                [[k, s["p50"], s["iqr"], s["p95"]] for k, s in stats.items()]))
    emit("threads", {"iters": args.iters, "floor_ms": stats}, load_start)


if __name__ == "__main__":
    main()
