"""COCO mAP of every backend x precision this machine runs, and the record ``auto`` reads.

``python -m rtc_server.models accuracy [--write]``: each path loads the same model through
the engine (``opening.open_detector``) and detects on coco128 (``../shared/data/coco128``
here) through the project's own letterbox, decode and NMS at Ultralytics' val settings
(conf 0.001, IoU 0.7, max_det 300); pycocotools scores it (``evaluate.py``). Prints a
table. ``--write`` stores the results in the accuracy record
``rtc_server/engine/accuracy.json`` that ``RTC_BACKEND=auto`` consults (a path must be
within 0.5 mAP50-95 points of onnxruntime f32 to be chosen); commit that file.

The writer lives here, a tool above the engine; the engine only reads the record
(``engine/accuracy.py``), so nothing at run time depends on how it was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..engine import accuracy
from ..engine.artifacts import artifact_sha256, int8_path, sha256_of
from ..engine.backends import BACKENDS
from ..engine.detector import ModelError
from ..engine.host import machine, versions
from ..engine.opening import open_detector
from .evaluate import evaluate, load_dataset
from .fetch import DEFAULT_DEST


@dataclass(frozen=True)
class Run:
    """One measurement: the model, the rows (one per path) and how many images."""

    model: Path
    sha256: str
    images: int
    rows: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        return {"model": self.model.name, "sha256": self.sha256[:12], "images": self.images, "rows": self.rows}


def paths(model: Path) -> list[tuple[str, str]]:
    """Every backend x precision worth measuring here (whether or not it will load)."""
    out = [("onnxruntime", "f32"), ("openvino", "f32"), ("openvino", "bf16"), ("openvino", "f16")]
    if int8_path(model).is_file():
        out.append(("openvino", "int8"))
    return out


def run(args: argparse.Namespace, command: str) -> Run:
    """Measure what ``args`` asks; print a table; with ``--write``, update the record
    noting ``command`` as what made it. ``ValueError`` for arguments that cannot run."""
    if args.write and args.limit:
        raise ValueError("--write needs the whole image folder (no --limit)")
    model = Path(args.model or os.environ.get("RTC_MODEL") or DEFAULT_DEST).resolve()
    if not model.is_file():
        raise ValueError(f"no model at {model} (run `python -m rtc_server.models fetch` or pass --model)")
    if not args.images.is_dir():
        raise ValueError(f"no images at {args.images}")
    todo = [tuple(o.split(":", 1)) for o in args.only] or paths(model)
    unknown = [f"{b}:{p}" for b, *p in todo if b not in BACKENDS or len(p) != 1]
    if unknown:
        raise ValueError(f"--only {', '.join(unknown)}: use backend:precision with a backend of {', '.join(BACKENDS)}")
    dataset = load_dataset(args.images, args.limit)
    sha = sha256_of(model)
    measured = [measure(model, sha, backend, precision, dataset, args) for backend, precision in todo]
    rows = [r for r in measured if r is not None]
    ref = next((r for r in rows if (r["backend"], r["precision"]) == accuracy.REFERENCE and "map50_95" in r), None)
    ref = ref or accuracy.find(accuracy.load_records(), sha, *accuracy.REFERENCE)  # --only: the recorded one
    for r in rows:
        if ref and "map50_95" in r:
            r["delta_points"] = round((r["map50_95"] - ref["map50_95"]) * 100, 2)
            r["within_bound"] = -r["delta_points"] <= accuracy.BOUND_POINTS
    headers = ["backend", "precision", "mAP50-95", "mAP50", "Δ mAP50-95 (points)", f"within {accuracy.BOUND_POINTS}"]
    print(_table(headers, [[r["backend"], r["precision"], _f(r.get("map50_95")), _f(r.get("map50")),
                            "-" if "delta_points" not in r else f"{r['delta_points']:+.2f}",
                            r.get("within_bound", "not run: " + r.get("error", "-")[:70])] for r in rows]))
    if args.write:
        write_record(model, sha, rows, images=len(dataset), dataset=args.images, imgsz=args.imgsz,
                     letterbox=args.letterbox, command=command)
    return Run(model, sha, len(dataset), rows)


def measure(model: Path, sha: str, backend: str, precision: str, dataset: Sequence[Any],
            args: argparse.Namespace) -> dict[str, Any] | None:
    """One path's row: its scores, or why it was not measured (None: it ran as another precision)."""
    try:
        detector = open_detector(model, backend, precision, sha256=sha, imgsz=args.imgsz,
                                 rect=args.letterbox == "rect", threads=args.threads, providers=(), cache_dir=None)
    except ModelError as exc:
        reason = str(exc).removeprefix(f"{model}: ")
        print(f"  {backend} {precision}: not measured: {reason}", flush=True)
        return {"backend": backend, "precision": precision, "error": reason}
    t0 = time.perf_counter()
    score = evaluate(detector, dataset, classes=len(detector.info.class_names))
    artifact = int8_path(model) if precision == "int8" else None
    row = {"backend": backend, "precision": detector.info.precision, "map50_95": round(score.map50_95, 4),
           "map50": round(score.map50, 4), "images": score.images, "seconds": round(time.perf_counter() - t0, 1),
           "artifact_sha256": artifact_sha256(artifact) if artifact else None}
    if artifact:
        row["artifact"] = f"{artifact.name}: {made_by(artifact)}"
    if detector.info.precision != precision:
        print(f"  {backend} {precision}: ran as {detector.info.precision}; not recorded as {precision}")
        return None
    print(f"  {backend} {precision}: mAP50-95 {score.map50_95:.4f} mAP50 {score.map50:.4f} "
          f"({row['seconds']} s)", flush=True)
    return row


def made_by(ir: Path) -> str:
    """How an INT8 IR was made (``quantize.py`` notes it in the IR)."""
    from ..engine.backends.openvino import core

    model = core().read_model(str(ir))
    key = ["rtc_yolo", "quantization"]
    return model.get_rt_info(key).astype(str) if model.has_rt_info(key) else "unknown origin"


def write_record(model: Path, sha: str, rows: list[dict[str, Any]], *, images: int, dataset: Path, imgsz: int,
                 letterbox: str, command: str, path: Path | None = None) -> Path:
    """Replace this model's records of the measured paths in the accuracy record (others stay)."""
    path = accuracy.RECORD_FILE if path is None else path
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("about", "COCO mAP on coco128 through the project's own path, written by `python -m "
                    "rtc_server.models accuracy --write`; auto runs only paths within bound_points of onnxruntime f32")
    data["bound_points"] = accuracy.BOUND_POINTS
    records = data.setdefault("records", [])
    when = datetime.now(UTC).isoformat(timespec="seconds")
    for r in rows:
        if "map50_95" not in r:
            continue
        key = (sha, r["backend"], r["precision"], r["artifact_sha256"])
        records[:] = [x for x in records if (x["model_sha256"], x["backend"], x["precision"],
                                             x.get("artifact_sha256")) != key]
        records.append({"model": model.name, "model_sha256": sha, "backend": r["backend"],
                        "precision": r["precision"], "artifact_sha256": r["artifact_sha256"],
                        **({"artifact": r["artifact"]} if r.get("artifact") else {}),
                        "map50_95": r["map50_95"], "map50": r["map50"], "images": images,
                        "dataset": dataset.name if dataset.name != "train2017" else "coco128",
                        "imgsz": imgsz, "letterbox": letterbox, "measured": when,
                        "machine": machine(), "versions": versions(), "command": command})
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {len([r for r in rows if 'map50_95' in r])} records to {path}")
    return path


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table (pastes straight into docs/benchmarks.md)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
