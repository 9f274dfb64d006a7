"""Before/after for the ``yolo.decode`` fix: the pre-fix module from git against the current one.

The fix (argmax only over the anchors above the confidence threshold) must give identical
arrays and take less time; both run on the same model output, interleaved call by call.

    python -m bench.decode_before_after [--before ab7c3fd] [--calls 500]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.common import ROOT, bus_rgb, emit, find_model, load, summary
from rtc_server.engine import yolo


def load_old(commit: str, folder: Path) -> object:
    source = subprocess.run(["git", "show", f"{commit}:rtc_server/engine/yolo.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "yolo_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("yolo_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["yolo_before"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="ab7c3fd", help="commit with the pre-fix rtc_server/engine/yolo.py")
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    load_start = load()
    session = ort.InferenceSession(str(find_model()), providers=["CPUExecutionProvider"])
    blob = yolo.to_blob(yolo.Letterbox.fit(640, 480).apply(bus_rgb()))
    output = session.run(None, {session.get_inputs()[0].name: blob})[0][0]
    with tempfile.TemporaryDirectory() as folder:
        old = load_old(args.before, Path(folder))
        before, after = [], []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            r_old = old.decode(output, old.Thresholds())
            t1 = time.perf_counter()
            r_new = yolo.decode(output, yolo.Thresholds())
            t2 = time.perf_counter()
            before.append((t1 - t0) * 1000)
            after.append((t2 - t1) * 1000)
    identical = all(np.array_equal(a, b) for a, b in zip(r_old, r_new, strict=True))
    b, a = summary(before), summary(after)
    print(f"decode + NMS, 640x480 bus ({len(r_new[0])} boxes), {args.calls} interleaved calls: "
          f"before p50 {b['p50']:.3f} ms, after p50 {a['p50']:.3f} ms; identical output: {identical}")
    emit("decode_before_after", {"before_ms": b, "after_ms": a, "identical": identical}, load_start)
    if not identical:
        raise SystemExit("the outputs differ")


if __name__ == "__main__":
    main()
