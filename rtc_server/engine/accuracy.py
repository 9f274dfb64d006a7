"""The accuracy record: which backend x precision paths the project measured, and how well.

``accuracy.json`` (beside this module) holds COCO mAP50-95 / mAP50 on coco128 for each
model (by sha256) x backend x precision that ``python -m rtc_server.models accuracy --write``
measured (``rtc_server/models/accuracy.py``: the writer is a tool above the engine; this
module only reads), with the command, date, CPU and versions of that run. ``auto`` runs only paths this record
documents as within ``BOUND_POINTS`` mAP50-95 points of the same model under onnxruntime
FP32, the reference; a path with no record, or out of bounds, is never chosen. An INT8
model is a file of its own (calibration decides its weights), so its record also names the
sha256 of that file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

RECORD_FILE = Path(__file__).resolve().parent / "accuracy.json"
#: The most mAP50-95 a path may lose against onnxruntime FP32, in points (0.5 = 0.005).
BOUND_POINTS = 0.5
REFERENCE = ("onnxruntime", "f32")


@dataclass(frozen=True)
class Verdict:
    eligible: bool
    #: mAP50-95 / mAP50 of the path (None without a record) and its loss in points.
    map50_95: float | None
    map50: float | None
    loss_points: float | None
    reason: str


def load_records(path: Path | None = None) -> list[dict[str, Any]]:
    path = RECORD_FILE if path is None else path
    return list(_load(str(path), path.stat().st_mtime_ns if path.is_file() else 0))


@cache
def _load(path: str, _mtime: int) -> tuple[dict[str, Any], ...]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return ()
    return tuple(data.get("records", ()))


def record_digest(path: Path | None = None) -> str:
    """Changes whenever the record does (part of ``auto``'s cache key)."""
    path = RECORD_FILE if path is None else path
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except FileNotFoundError:
        return "none"


def find(records: Iterable[dict[str, Any]], model_sha256: str, backend: str, precision: str,
         artifact: str | None = None) -> dict[str, Any] | None:
    for r in records:
        if (r.get("model_sha256"), r.get("backend"), r.get("precision")) == (model_sha256, backend, precision) \
                and r.get("artifact_sha256") == artifact:
            return r
    return None


def verdict(model_sha256: str, backend: str, precision: str, artifact: str | None = None,
            records: Iterable[dict[str, Any]] | None = None) -> Verdict:
    """Whether ``auto`` may run this path for this model, and why (or why not)."""
    records = load_records() if records is None else list(records)
    mine = find(records, model_sha256, backend, precision, artifact)
    ref = find(records, model_sha256, *REFERENCE)
    if (backend, precision) == REFERENCE:
        # The reference is what every other path is measured against: always eligible.
        return Verdict(True, ref["map50_95"] if ref else None, ref["map50"] if ref else None, 0.0, "reference")
    if mine is None:
        return Verdict(False, None, None, None, "no accuracy record for this model file")
    if ref is None:
        return Verdict(False, mine["map50_95"], mine["map50"], None, "no onnxruntime f32 record to compare with")
    loss = (ref["map50_95"] - mine["map50_95"]) * 100
    if loss > BOUND_POINTS:
        return Verdict(False, mine["map50_95"], mine["map50"], loss,
                       f"loses {loss:.2f} mAP50-95 points (bound {BOUND_POINTS})")
    return Verdict(True, mine["map50_95"], mine["map50"], loss, f"within bound ({-loss:+.2f} points)")
