"""COCO mAP50-95 / mAP50 of every backend x precision this machine runs, in one run.

Each path loads the same model through ``rtc_server.engine.loader`` and detects on coco128
(``../shared/data/coco128`` here) through the project's own letterbox, decode and NMS at
Ultralytics' val settings (conf 0.001, IoU 0.7, max_det 300); pycocotools scores it.
Prints a table, then one JSON line. ``--write`` stores the results in the accuracy record
``rtc_server/engine/accuracy.json`` that ``RTC_BACKEND=auto`` consults (a path must be
within 0.5 mAP50-95 points of onnxruntime f32 to be chosen); commit that file.

    python -m bench.accuracy [--images ../shared/data/coco128/images/train2017] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, emit, find_model, load, table
from rtc_server.engine import accuracy
from rtc_server.engine.autoselect import machine, versions
from rtc_server.engine.backends import BACKENDS
from rtc_server.engine.detector import ModelError
from rtc_server.engine.evaluate import evaluate as coco_eval
from rtc_server.engine.evaluate import load_dataset
from rtc_server.engine.loader import int8_path, open_detector
from rtc_server.models import sha256_of

DEFAULT_IMAGES = ROOT.parent / "shared/data/coco128/images/train2017"


def paths(model: Path) -> list[tuple[str, str]]:
    """Every backend x precision worth measuring here (whether or not it will load)."""
    out = [("onnxruntime", "f32"), ("openvino", "f32"), ("openvino", "bf16"), ("openvino", "f16")]
    if int8_path(model).is_file():
        out.append(("openvino", "int8"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="ONNX model [RTC_MODEL, ../shared, models/]")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="YOLO-layout images folder")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (a quick look)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--letterbox", choices=("rect", "square"), default="rect")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--only", action="append", default=[], help="backend:precision to measure (repeatable)")
    parser.add_argument("--write", action="store_true", help="store the results in the accuracy record")
    args = parser.parse_args()
    if args.write and args.limit:
        parser.error("--write needs the whole image folder (no --limit)")
    load_start = load()
    model = find_model(args.model)
    if not args.images.is_dir():
        raise SystemExit(f"no images at {args.images}")
    dataset = load_dataset(args.images, args.limit)
    sha = sha256_of(model)
    todo = [tuple(o.split(":", 1)) for o in args.only] or paths(model)
    rows: list[dict[str, Any]] = []
    for backend, precision in todo:
        assert backend in BACKENDS, backend
        try:
            detector = open_detector(model, backend, precision, sha256=sha, imgsz=args.imgsz,
                                     rect=args.letterbox == "rect", threads=args.threads, providers=(),
                                     cache_dir=None)
        except ModelError as exc:
            reason = str(exc).removeprefix(f"{model}: ")
            print(f"  {backend} {precision}: not measured: {reason}", flush=True)
            rows.append({"backend": backend, "precision": precision, "error": reason})
            continue
        t0 = time.perf_counter()
        score = coco_eval(detector, dataset, classes=len(detector.info.class_names))
        artifact = int8_path(model) if precision == "int8" else None
        row = {"backend": backend, "precision": detector.info.precision, "map50_95": round(score.map50_95, 4),
               "map50": round(score.map50, 4), "images": score.images, "seconds": round(time.perf_counter() - t0, 1),
               "artifact_sha256": accuracy.artifact_sha256(artifact) if artifact else None}
        if artifact:
            row["artifact"] = f"{artifact.name}: {made_by(artifact)}"
        if detector.info.precision != precision:
            print(f"  {backend} {precision}: ran as {detector.info.precision}; not recorded as {precision}")
            continue
        rows.append(row)
        print(f"  {backend} {precision}: mAP50-95 {score.map50_95:.4f} mAP50 {score.map50:.4f} "
              f"({row['seconds']} s)", flush=True)
    ref = next((r for r in rows if (r["backend"], r["precision"]) == accuracy.REFERENCE and "map50_95" in r), None)
    ref = ref or accuracy.find(accuracy.load_records(), sha, *accuracy.REFERENCE)  # --only: the recorded one
    for r in rows:
        if ref and "map50_95" in r:
            r["delta_points"] = round((r["map50_95"] - ref["map50_95"]) * 100, 2)
            r["within_bound"] = -r["delta_points"] <= accuracy.BOUND_POINTS
    print(table(["backend", "precision", "mAP50-95", "mAP50", "Δ mAP50-95 (points)", f"within {accuracy.BOUND_POINTS}"],
                [[r["backend"], r["precision"], _f(r.get("map50_95")), _f(r.get("map50")),
                  "-" if "delta_points" not in r else f"{r['delta_points']:+.2f}",
                  r.get("within_bound", "not run: " + r.get("error", "-")[:70])] for r in rows]))
    command = "python -m bench.accuracy " + " ".join(sys.argv[1:])
    if args.write:
        write(model, sha, rows, len(dataset), args, command.strip())
    emit("accuracy", {"model": model.name, "sha256": sha[:12], "images": len(dataset), "rows": rows}, load_start)


def made_by(ir: Path) -> str:
    """How an INT8 IR was made (``rtc_server.engine.quantize`` notes it in the IR)."""
    from rtc_server.engine.backends.openvino import core

    model = core().read_model(str(ir))
    key = ["rtc_yolo", "quantization"]
    return model.get_rt_info(key).astype(str) if model.has_rt_info(key) else "unknown origin"


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def write(model: Path, sha: str, rows: list[dict[str, Any]], images: int, args: argparse.Namespace,
          command: str) -> None:
    path = accuracy.RECORD_FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault("about", "COCO mAP on coco128 through the project's own path, written by `python -m "
                    "bench.accuracy --write`; auto runs only paths within bound_points of onnxruntime f32")
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
                        "dataset": args.images.name if args.images.name != "train2017" else "coco128",
                        "imgsz": args.imgsz, "letterbox": args.letterbox, "measured": when,
                        "machine": machine(), "versions": versions(), "command": command})
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {len([r for r in rows if 'map50_95' in r])} records to {path}")


if __name__ == "__main__":
    main()
