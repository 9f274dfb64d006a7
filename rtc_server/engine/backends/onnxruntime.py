"""onnxruntime: the reference backend (FP32 on CPU) and the GPU one (CUDA/TensorRT providers).

onnxruntime takes a list of execution providers and silently falls back to the CPU when
one of them cannot start (no GPU, a CUDA or cuDNN library missing). A server that was told
to use a GPU and quietly runs on the CPU is worse than one that does not start, so after
loading we compare the providers really in use with those asked for and refuse, quoting
what onnxruntime said about the one that did not load.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import BackendError, BackendInfo, dims

CPU = "CPUExecutionProvider"
#: ONNX tensor types this backend feeds (the blob is cast to the model's own input type).
_DTYPES: dict[str, np.dtype] = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


def load(path: Path, *, precision: str = "auto", threads: int = 0, providers: Sequence[str] = (),
         cache_dir: Path | None = None) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(path, precision=precision, threads=threads, providers=providers, cache_dir=cache_dir)


def available_providers() -> tuple[str, ...]:
    return tuple(ort.get_available_providers())


def check_available(requested: Sequence[str]) -> None:
    """Refuse providers this onnxruntime build does not have, before trying to load."""
    have = available_providers()
    missing = [p for p in requested if p not in have]
    if missing:
        raise BackendError(
            f"execution provider {', '.join(missing)} is not in this onnxruntime build "
            f"(onnxruntime {ort.__version__}, device {ort.get_device()}; it has {', '.join(have)}). "
            "GPU providers come with the gpu extra (pip install 'rtc-yolo[gpu]', which brings "
            "onnxruntime-gpu in place of onnxruntime) on a machine with the NVIDIA driver and CUDA libraries"
        )


def provider_options(providers: Sequence[str], precision: str, cache_dir: Path | None) -> list[dict[str, str]]:
    """Per-provider options: TensorRT builds FP16 engines when f16 is asked for, and keeps
    its engines in the cache directory so a restart does not rebuild them (minutes)."""
    options: list[dict[str, str]] = []
    for provider in providers:
        opts: dict[str, str] = {}
        if provider == "TensorrtExecutionProvider":
            if precision == "f16":
                opts["trt_fp16_enable"] = "True"
            if cache_dir is not None:
                opts["trt_engine_cache_enable"] = "True"
                opts["trt_engine_cache_path"] = str(cache_dir / "tensorrt")
        options.append(opts)
    return options


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to fd 2 (onnxruntime logs provider failures there,
    not through Python), pass it on unchanged, and hand its lines to the caller."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if text:
                sys.stderr.write(text)
            plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # onnxruntime colours its log lines
            lines.extend(line.strip() for line in plain.splitlines() if line.strip())


class OnnxRuntimeBackend:
    def __init__(self, path: Path, *, precision: str = "auto", threads: int = 0, providers: Sequence[str] = (),
                 cache_dir: Path | None = None) -> None:
        requested = list(providers) or [CPU]
        check_available(requested)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        accelerated = any(p != CPU for p in requested)
        try:
            captured: contextlib.AbstractContextManager[list[str]] = (
                native_stderr() if accelerated else contextlib.nullcontext([]))
            with captured as log_lines:
                self._session = ort.InferenceSession(
                    str(path), options, providers=requested,
                    provider_options=provider_options(requested, precision, cache_dir))
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise BackendError(f"onnxruntime cannot load {path}: {exc}") from exc
        used = tuple(self._session.get_providers())
        not_loaded = [p for p in requested if p not in used]
        if not_loaded:
            said = [line for line in log_lines if "rror" in line or "ail" in line][-3:] or ["(nothing logged)"]
            raise BackendError(
                f"execution provider {', '.join(not_loaded)} did not load (onnxruntime fell back to "
                f"{', '.join(used)}); onnxruntime said: " + " | ".join(said)
            )
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or len(outputs) != 1 or len(outputs[0].shape) != 3:
            raise BackendError(
                f"{path} is not a YOLO detection export: inputs {[i.shape for i in inputs]}, "
                f"outputs {[o.shape for o in outputs]} (want one [B, 3, H, W] input, one [B, 4 + classes, "
                "anchors] output)"
            )
        dtype = _DTYPES.get(inputs[0].type)
        if dtype is None:
            raise BackendError(f"{path}: input type {inputs[0].type} is not float or float16")
        model_precision = "f16" if dtype == np.float16 else "f32"
        gpu_f16 = precision == "f16" and used[0] == "TensorrtExecutionProvider"
        if precision not in ("auto", model_precision) and not gpu_f16:
            raise BackendError(
                f"onnxruntime runs this model in its own precision ({model_precision}), not {precision}; "
                "bf16 and int8 run on the openvino backend, f16 from an FP16 export or with TensorRT"
            )
        self._input_name = inputs[0].name
        channels = outputs[0].shape[1]
        self.info = BackendInfo(
            name="onnxruntime",
            precision="f16" if gpu_f16 else model_precision,
            device=used[0].removesuffix("ExecutionProvider"),
            input_shape=dims(inputs[0].shape),
            input_dtype=dtype,
            providers=used,
            metadata=dict(self._session.get_modelmeta().custom_metadata_map),
            output_channels=channels if isinstance(channels, int) else None,
        )

    def run(self, blob: np.ndarray) -> np.ndarray:
        (output,) = self._session.run(None, {self._input_name: blob})
        return np.asarray(output, dtype=np.float32)
