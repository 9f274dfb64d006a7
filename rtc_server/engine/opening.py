"""Opening one detector: one explicit backend x precision, or a ``ModelError`` saying why not.

The layer between the backends and the choices made above them: ``autoselect`` opens
each candidate through here, the loader opens an explicit choice through here, and the
accuracy tool opens every path it measures through here. It decides nothing itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .artifacts import int8_path
from .backends import BackendError, open_backend
from .detector import ModelError, YoloDetector


def artifact_for(model: Path, backend: str, precision: str) -> Path:
    """The file a path runs: the ONNX model itself, or for OpenVINO INT8 its quantized IR."""
    if backend == "openvino" and precision == "int8" and model.suffix == ".onnx":
        ir = int8_path(model)
        if not ir.is_file():
            raise ModelError(f"no INT8 model for {model}: {ir} is missing; make it with "
                             f"`python -m rtc_server.models quantize --model {model}`")
        return ir
    return model


def open_detector(model: Path, backend: str, precision: str, *, sha256: str, imgsz: int, rect: bool,
                  threads: int, providers: Sequence[str], cache_dir: Path | None,
                  name: str | None = None) -> YoloDetector:
    """One explicit backend x precision; ``ModelError`` if it cannot run as asked."""
    artifact = artifact_for(model, backend, precision)
    try:
        runner = open_backend(backend, artifact, precision=precision, threads=threads, providers=providers,
                              cache_dir=cache_dir)
    except BackendError as exc:
        raise ModelError(f"{model}: {exc}") from exc
    return YoloDetector(runner, name=name or model.stem, sha256=sha256, imgsz=imgsz, rect=rect)
