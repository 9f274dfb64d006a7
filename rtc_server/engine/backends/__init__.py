"""Backends: the part of a model that only runs tensors (Frigate's detector plugins, smaller).

A backend takes a ``[B, 3, H, W]`` float32 blob (RGB, 0..1) and returns the model's raw
``[B, 4 + classes, anchors]`` output as float32. It knows nothing of YOLO geometry
(letterbox, decode, NMS live once, in ``yolo.py`` and ``detector.YoloDetector``), of
streams or of HTTP. Besides running it tells what it actually runs: input shape (static
or dynamic dims), input dtype, device or providers in use, the precision it computes in,
and the model's metadata (class names). One module per backend; each imports its
runtime lazily, so a server that never uses OpenVINO never pays its import.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: model specs and config name BACKENDS without loading numpy
    import numpy as np

#: Backend names, in the order ``auto`` lists them (the first is the reference).
BACKENDS = ("onnxruntime", "openvino")
#: Precisions a backend may be asked for; "auto" lets the backend (or ``auto``) decide.
PRECISIONS = ("auto", "f32", "bf16", "f16", "int8")


class BackendError(RuntimeError):
    """The backend cannot run this model as asked; the message says which part and why."""


@dataclass(frozen=True)
class BackendInfo:
    """What a loaded backend can tell about how it runs the model."""

    #: "onnxruntime" or "openvino".
    name: str
    #: The precision the maths actually runs in: "f32", "bf16", "f16" or "int8".
    precision: str
    #: The device the model runs on, in the backend's words ("CPU", "CUDA", "GPU.0", ...).
    device: str
    #: ``[B, 3, H, W]`` with ``None`` for dynamic dimensions.
    input_shape: tuple[int | None, ...]
    #: The dtype the model's input wants (float32, or float16 for an FP16 export).
    input_dtype: np.dtype
    #: onnxruntime execution providers in use (in priority order); OpenVINO: its device.
    providers: tuple[str, ...] = ()
    #: The model file's own metadata (Ultralytics: names, stride, imgsz, version, ...).
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Output channels (4 + classes) where the model states them statically.
    output_channels: int | None = None

    @property
    def static_hw(self) -> tuple[int, int] | None:
        """``(H, W)`` when the model only accepts one input size; None when it takes any."""
        h, w = self.input_shape[2], self.input_shape[3]
        return (h, w) if h is not None and w is not None else None

    @property
    def static_batch(self) -> int | None:
        return self.input_shape[0]


class Backend(Protocol):
    info: BackendInfo

    def run(self, blob: np.ndarray) -> np.ndarray:
        """``[B, 3, H, W]`` blob (already in ``info.input_dtype``) -> ``[B, C, A]`` float32.

        Blocking; called from one worker thread at a time per backend instance."""
        ...


def open_backend(name: str, path: Path, *, precision: str = "auto", threads: int = 0,
                 providers: Sequence[str] = (), cache_dir: Path | None = None) -> Backend:
    """Load ``path`` with backend ``name``; ``BackendError`` saying why it cannot."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; there are {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; there are {', '.join(PRECISIONS)}")
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ImportError as exc:  # e.g. OpenVINO not installed in a trimmed image
        raise BackendError(f"backend {name} is not installed: {exc}") from exc
    return module.load(path, precision=precision, threads=threads, providers=providers, cache_dir=cache_dir)


def dims(shape: Sequence[object]) -> tuple[int | None, ...]:
    """A runtime's shape (ints, strings or -1 for dynamic dims) as ints and Nones."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
