"""``RTC_BACKEND=auto``: the fastest backend x precision on this machine, within accuracy bounds.

Candidates are onnxruntime FP32 (the reference) and the OpenVINO precisions this CPU
offers (f32; bf16 with AVX512_BF16 or AMX; f16 with AMX-FP16; int8 when a quantized IR sits
next to the model). A candidate runs only if ``accuracy.json`` documents it as within
``BOUND_POINTS`` mAP50-95 of the reference for this very model file; a model the project has
not measured runs on the reference. The eligible ones are timed on a few warm-up runs at
the input size frames will have (480x640 for ``rect`` at 640), each candidate's runs back
to back, in two passes of opposite order; the fastest wins — by more than ``MARGIN`` over
the reference, so noise does not flip a tie.

Cold start: the trials load every candidate (0.1-0.3 s each) and run it a few times. The
choice is cached in ``<cache_dir>/auto.json`` keyed by everything that could change it
(model sha256, INT8 file, CPU model and flags, cores, threads, input size, versions,
accuracy record), so a restart on the same machine loads only the chosen path, and
OpenVINO keeps its compiled model in ``<cache_dir>/openvino``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .accuracy import BOUND_POINTS, REFERENCE, record_digest, verdict
from .artifacts import artifact_sha256, int8_path
from .detector import ModelError, YoloDetector
from .host import machine, versions
from .opening import open_detector
from .yolo import Letterbox

log = logging.getLogger(__name__)

#: Timed runs per candidate (after ``WARMUP`` untimed ones), split over two passes.
WARMUP = 2
RUNS = 6
#: A candidate must beat the reference's median by this fraction to be chosen over it.
MARGIN = 0.05
CACHE_FILE = "auto.json"


@dataclass
class Trial:
    backend: str
    precision: str
    eligible: bool
    reason: str
    map50_95: float | None = None
    map50: float | None = None
    ms: list[float] | None = None
    detector: YoloDetector | None = None

    @property
    def p50(self) -> float:
        return float(np.median(self.ms)) if self.ms else float("nan")

    def row(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "eligible": self.eligible,
                "reason": self.reason, "map50_95": self.map50_95, "map50": self.map50,
                "ms_p50": None if not self.ms else round(self.p50, 2)}


def candidates(model: Path, precision: str) -> list[tuple[str, str]]:
    """Backend x precision paths this machine could run for ``model``."""
    paths = [REFERENCE]
    try:
        from .backends.openvino import cpu_capabilities
    except ImportError:
        log.info("auto: OpenVINO is not installed; only onnxruntime is a candidate")
    else:
        caps = cpu_capabilities()
        paths.append(("openvino", "f32"))
        if "BF16" in caps:
            paths.append(("openvino", "bf16"))
        if "FP16" in caps:
            paths.append(("openvino", "f16"))
        if int8_path(model).is_file() and "INT8" in caps:
            paths.append(("openvino", "int8"))
    return paths if precision == "auto" else [p for p in paths if p[1] == precision]


def trial_hw(imgsz: int, rect: bool) -> tuple[int, int]:
    """The input size a 640x480 camera frame takes: what most frames will run at."""
    return Letterbox.fit(640, 480, imgsz, rect=rect).input_hw


def cache_key(model_sha: str, int8_sha: str | None, precision: str, threads: int, hw: tuple[int, int]) -> str:
    parts = {"model": model_sha, "int8": int8_sha, "precision": precision, "threads": threads, "hw": hw,
             "machine": machine(), "versions": versions(), "accuracy": record_digest(), "runs": [WARMUP, RUNS]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_cache(cache_dir: Path | None, key: str) -> dict[str, Any] | None:
    if cache_dir is None:
        return None
    try:
        return json.loads((cache_dir / CACHE_FILE).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def write_cache(cache_dir: Path | None, key: str, entry: dict[str, Any]) -> None:
    if cache_dir is None:
        return
    path = cache_dir / CACHE_FILE
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        data[key] = entry
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only filesystem: choose again next start, say so once
        log.warning("auto: cannot cache the backend choice in %s (%s); the next start times the trials again",
                    path, exc)


def choose(model: Path, precision: str, *, sha256: str, imgsz: int, rect: bool, threads: int,
           providers: Sequence[str], cache_dir: Path | None, name: str | None) -> YoloDetector:
    def open_path(backend: str, prec: str) -> YoloDetector:
        return open_detector(model, backend, prec, sha256=sha256, imgsz=imgsz, rect=rect, threads=threads,
                             providers=(), cache_dir=cache_dir, name=name)  # providers bypass auto (loader)

    if model.suffix == ".xml":  # an OpenVINO IR: only OpenVINO reads it
        return open_path("openvino", precision)
    int8 = int8_path(model)
    int8_sha = artifact_sha256(int8) if int8.is_file() else None
    trials: list[Trial] = []
    for backend, prec in candidates(model, precision):
        v = verdict(sha256, backend, prec, int8_sha if prec == "int8" else None)
        # An explicit precision is the user's choice: run it even without a record, warn.
        eligible = v.eligible or precision != "auto"
        reason = v.reason if v.eligible else (f"{v.reason}; run anyway: RTC_PRECISION={precision}"
                                                if eligible else v.reason)
        trials.append(Trial(backend, prec, eligible, reason, v.map50_95, v.map50))
    runnable = [t for t in trials if t.eligible]
    if not runnable:
        raise ModelError(f"{model}: no backend can run precision {precision} on this machine "
                         f"(candidates: {', '.join(f'{t.backend} {t.precision}' for t in trials) or 'none'})")
    if len(runnable) == 1:
        t = runnable[0]
        log.info("auto: %s %s (%s; the others: %s)", t.backend, t.precision, t.reason,
                 "; ".join(f"{o.backend} {o.precision}: {o.reason}" for o in trials if o is not t) or "none")
        return open_path(t.backend, t.precision)

    hw = trial_hw(imgsz, rect)
    key = cache_key(sha256, int8_sha, precision, threads, hw)
    cached = read_cache(cache_dir, key)
    if cached is not None:
        chosen = (cached["backend"], cached["precision"])
        if any((t.backend, t.precision) == chosen for t in runnable):
            log.info("auto: %s %s (cached choice from %s, trials at %dx%d: %s)", *chosen, cached["measured_at"],
                     *hw, ", ".join(f"{r['backend']} {r['precision']} {r['ms_p50']} ms" for r in cached["table"]
                                    if r["ms_p50"] is not None))
            detector = open_path(*chosen)
            detector.auto_trials = cached["table"]
            return detector

    started = time.perf_counter()
    for t in runnable:
        try:
            t.detector = open_path(t.backend, t.precision)
        except ModelError as exc:
            t.eligible, t.reason = False, f"cannot load: {exc}"
    loaded = [t for t in runnable if t.detector is not None]
    if not loaded:
        raise ModelError(f"{model}: no candidate backend could load it: "
                         + "; ".join(f"{t.backend} {t.precision}: {t.reason}" for t in runnable))
    blobs = {}
    for t in loaded:
        det = t.detector
        assert det is not None
        lb = det.letterbox(hw[1], hw[0])
        blobs[id(t)] = det.blob(np.zeros((hw[0], hw[1], 3), np.uint8), lb)
        for _ in range(WARMUP):
            det.infer(blobs[id(t)])
        t.ms = []
    # Each candidate runs its frames back to back, as it would serve them (one run each in
    # turn would let one runtime's idle spinning threads slow the next one down), in two
    # passes of opposite order so a load change during the trials hits every candidate alike.
    for order in (loaded, loaded[::-1]):
        for t in order:
            assert t.detector is not None and t.ms is not None
            t.detector.infer(blobs[id(t)])  # after another runtime ran: settle, untimed
            for _ in range(RUNS - RUNS // 2 if order is loaded else RUNS // 2):
                t0 = time.perf_counter()
                t.detector.infer(blobs[id(t)])
                t.ms.append((time.perf_counter() - t0) * 1000)
    ref = next((t for t in loaded if (t.backend, t.precision) == REFERENCE), None)
    best = min(loaded, key=lambda t: t.p50)
    if ref is not None and best is not ref and best.p50 > ref.p50 * (1 - MARGIN):
        best = ref
    spent = time.perf_counter() - started
    table = [t.row() for t in trials]
    log.info("auto: trials at %dx%d, %d threads, %d runs each (%.2f s); bound %.1f mAP50-95 points vs %s %s:",
             *hw, threads, RUNS, spent, BOUND_POINTS, *REFERENCE)
    for t in trials:
        speed = f"{ref.p50 / t.p50:.2f}x" if ref is not None and t.ms else "-"
        mark = "<- chosen" if t is best else ""
        log.info("auto:   %-11s %-4s %8s ms %6s  mAP50-95 %-6s  %s %s", t.backend, t.precision,
                 f"{t.p50:.1f}" if t.ms else "-", speed,
                 f"{t.map50_95:.4f}" if t.map50_95 is not None else "-", t.reason, mark)
    write_cache(cache_dir, key, {"backend": best.backend, "precision": best.precision, "table": table,
                                 "hw": list(hw), "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "trials_s": round(spent, 3)})
    for t in loaded:
        if t is not best:
            t.detector = None  # free the others' compiled models now
    assert best.detector is not None
    best.detector.auto_trials = table
    return best.detector
