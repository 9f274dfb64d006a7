"""INT8: ``python -m rtc_server.models quantize`` makes an OpenVINO INT8 model with NNCF that
the openvino backend runs as int8, and that ``auto`` ignores until the accuracy record
documents that very file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rtc_server.engine import accuracy
from rtc_server.engine.artifacts import artifact_sha256, int8_path, sha256_of
from rtc_server.engine.loader import load_detector
from rtc_server.engine.yolo import Thresholds

from .conftest import COCO128, ROOT
from .helpers import cannot_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quantized(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import nncf  # noqa: F401
    except ImportError:
        cannot_run("NNCF is not installed (pip install -e '.[quantize]')")
    if not COCO128.is_dir():
        cannot_run(f"calibration images need coco128 at {COCO128}")
    model = tmp_path_factory.mktemp("int8") / "yolo11n.onnx"
    shutil.copyfile(model_file, model)
    proc = subprocess.run([sys.executable, "-m", "rtc_server.models", "quantize", "--model", str(model),
                           "--images", str(COCO128), "--subset", "16"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(int8_path(model)) in proc.stdout
    return model


def test_quantize_writes_an_int8_model_that_runs_as_int8(quantized: Path, bus_frame: np.ndarray) -> None:
    ir = int8_path(quantized)
    assert ir.is_file() and ir.with_suffix(".bin").is_file()
    detector = load_detector(quantized, backend="openvino", precision="int8")
    info = detector.info
    assert (info.backend, info.precision) == ("openvino", "int8")
    assert len(info.class_names) == 80 and info.class_names[0] == "person"  # metadata kept in the IR
    (result,) = detector.detect([bus_frame], [Thresholds()])
    labels = [d.label for d in result.detections]
    assert "bus" in labels and labels.count("person") >= 3


def test_auto_ignores_an_int8_model_the_record_does_not_document(quantized: Path, tmp_path: Path) -> None:
    v = accuracy.verdict(sha256_of(quantized), "openvino", "int8", artifact_sha256(int8_path(quantized)))
    assert not v.eligible and v.reason == "no accuracy record for this model file"
    detector = load_detector(quantized, cache_dir=tmp_path)
    assert detector.info.precision != "int8"
    assert detector.auto_trials is not None
    assert {(r["backend"], r["precision"]) for r in detector.auto_trials} >= {("openvino", "int8")}


def test_quantize_without_images_fails_clearly(tmp_path: Path, model_file: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "rtc_server.models", "quantize", "--model", str(model_file),
                           "--images", str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "no image folder" in proc.stderr
