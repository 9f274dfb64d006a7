"""``load_detector``: the one way the server (and benchmarks, tests) get a model to run.

A model file + backend + precision -> a ``YoloDetector`` whose backend runs exactly what
was asked, or a ``ModelError`` saying what cannot run and why (the server then exits 1).
``backend="auto"`` hands the choice to ``autoselect``: the fastest path on this machine
among those the accuracy record documents as within bounds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..models import sha256_of
from .backends import BACKENDS, PRECISIONS, BackendError, open_backend
from .detector import Detector, ModelError, YoloDetector

log = logging.getLogger(__name__)

#: Suffix of the INT8 OpenVINO IR that ``python -m rtc_server.models quantize`` writes
#: next to ``<model>.onnx``: ``<model>.int8.xml`` + ``<model>.int8.bin``.
INT8_SUFFIX = ".int8.xml"


def int8_path(model: Path) -> Path:
    """Where the INT8 IR of ``model`` lives (next to it; git-ignored under models/)."""
    return model.with_name(model.stem + INT8_SUFFIX)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rtc-yolo/backends`` or ``~/.cache/rtc-yolo/backends``: auto's choice,
    OpenVINO's compiled models (downloaded models sit beside it in ``models/``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rtc-yolo" / "backends"


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


def load_detector(
    model: Path,
    *,
    backend: str = "auto",
    precision: str = "auto",
    imgsz: int = 640,
    rect: bool = True,
    threads: int = 0,
    providers: Sequence[str] = (),
    cache_dir: Path | None = None,
    name: str | None = None,
) -> Detector:
    """Load ``model`` (an ONNX file, or an OpenVINO IR ``.xml``) to run on ``backend`` in
    ``precision``; ``threads`` is the backend's thread count (0: its own default, one per
    core); ``providers`` are onnxruntime execution providers (empty: the CPU);
    ``cache_dir`` keeps auto's choice and compiled models (None: no cache)."""
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"model file not found: {model} (run `make model` or set RTC_MODEL)")
    if backend not in ("auto", *BACKENDS):
        raise ModelError(f"unknown backend {backend!r}; use auto, {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    sha256 = sha256_of(model)
    if backend == "auto" and providers:
        backend = "onnxruntime"  # execution providers are onnxruntime's: naming any picks it
    if backend != "auto":
        detector = open_detector(model, backend, precision, sha256=sha256, imgsz=imgsz, rect=rect,
                                 threads=threads, providers=providers, cache_dir=cache_dir, name=name)
    else:
        from .autoselect import choose

        detector = choose(model, precision, sha256=sha256, imgsz=imgsz, rect=rect, threads=threads,
                          providers=providers, cache_dir=cache_dir, name=name)
    info = detector.info
    log.info("model %s: %s %s on %s (sha256 %s…)", info.name, info.backend, info.precision,
             ", ".join(info.providers), info.sha256[:12])
    return detector
