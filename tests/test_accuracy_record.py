"""The accuracy record: ``python -m rtc_server.models accuracy`` measures and writes it (a
tool above the engine), the engine's ``accuracy`` reads it (what ``auto`` trusts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtc_server.engine import accuracy
from rtc_server.models.accuracy import write_record
from rtc_server.models.cli import main

from .helpers import COCO128, cannot_run

SHA = "a" * 64


def _row(backend: str, precision: str, map50_95: float) -> dict[str, object]:
    return {"backend": backend, "precision": precision, "map50_95": map50_95, "map50": 0.6, "artifact_sha256": None}


def test_what_the_tool_writes_the_runtime_reads(tmp_path: Path) -> None:
    path = tmp_path / "accuracy.json"
    kw = dict(images=128, dataset=Path("coco128/images/train2017"), imgsz=640, letterbox="rect", path=path)
    write_record(Path("m.onnx"), SHA, [_row("onnxruntime", "f32", 0.48), _row("openvino", "bf16", 0.47),
                                       {"backend": "openvino", "precision": "f16", "error": "no f16 here"}],
                 command="python -m rtc_server.models accuracy --write", **kw)
    # A second run of one path replaces that path's record and keeps the others.
    write_record(Path("m.onnx"), SHA, [_row("openvino", "bf16", 0.4790)], command="again", **kw)
    records = accuracy.load_records(path)
    assert sorted((r["backend"], r["precision"]) for r in records) == [("onnxruntime", "f32"), ("openvino", "bf16")]
    v = accuracy.verdict(SHA, "openvino", "bf16", records=records)
    assert v.eligible and v.map50_95 == 0.4790 and "within bound" in v.reason
    assert json.loads(path.read_text())["bound_points"] == accuracy.BOUND_POINTS


def test_the_accuracy_command_measures_a_path(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not COCO128.is_dir():
        cannot_run(f"the accuracy command needs coco128 at {COCO128}")
    record = accuracy.RECORD_FILE.read_bytes()
    args = ["accuracy", "--model", str(model_file), "--images", str(COCO128), "--limit", "2",
            "--only", "onnxruntime:f32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| onnxruntime | f32 |" in out and "mAP50-95" in out
    assert main([*args, "--write"]) == 1  # a partial run never becomes the record
    assert accuracy.RECORD_FILE.read_bytes() == record
