"""OpenVINO: the fast CPU backend (bf16 where the CPU has it, INT8 from a quantized IR).

It reads the ONNX file as it is (or an OpenVINO IR, ``.xml`` + ``.bin``, such as the INT8
model ``python -m rtc_server.models quantize`` writes). A dynamic-shape model (YOLO11's
``[?, 3, ?, ?]``) is compiled once per input size at batch 1 — a static compile measured
10-15 % faster per frame than the dynamic one — and a batch runs image by image on it; a
static-shape model is compiled as it is. Compiled blobs go to ``cache_dir`` so a restart
skips most of each compile.

Precision is OpenVINO's ``INFERENCE_PRECISION_HINT``: unset, the CPU plugin runs bf16 on
CPUs with AVX512_BF16 or AMX and f32 elsewhere. Whatever was asked, the precision reported
is the one the compiled model says it runs, and a precision asked for but not run is an
error, not a silent fallback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov

from . import BackendError, BackendInfo, dims

log = logging.getLogger(__name__)

DEVICE = "CPU"
#: The input a 640x480 camera frame takes under the default letterbox (rect, 640).
CAMERA_INPUT_HW = (480, 640)
#: Input sizes compiled statically at most (camera frames take one or two); later sizes run
#: on one dynamic-shape compile.
MAX_STATIC_SHAPES = 6
#: Our precision names -> OpenVINO's hint values and the CPU capability each needs.
_HINTS = {"f32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "f16": ("f16", "FP16")}
_TYPE_NAMES = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def load(path: Path, *, precision: str = "auto", threads: int = 0, providers: Sequence[str] = (),
         cache_dir: Path | None = None) -> OpenVinoBackend:
    if providers:
        raise BackendError(f"RTC_PROVIDERS ({', '.join(providers)}) are onnxruntime execution providers; "
                           "the openvino backend takes none")
    return OpenVinoBackend(path, precision=precision, threads=threads, cache_dir=cache_dir)


_core: ov.Core | None = None
_core_lock = threading.Lock()


def core() -> ov.Core:
    """The process's one OpenVINO ``Core``, created on first use and never freed.

    Why one: each ``Core`` gets its own CPU plugin, and the plugin gives the thread that
    creates it a signal alternate stack, which it unmaps when that ``Core`` is freed,
    restoring the thread's previous one only if the ``Core`` is freed before any created
    after it. Two ``Core``s freed first-in-first-out (auto's trials, when onnxruntime wins)
    left the main thread's alternate stack pointing at unmapped memory, and the next signal
    (``SIGTERM``: Python's handlers run on the alternate stack) killed the server with
    SIGSEGV instead of a clean exit (OpenVINO 2026.4; ``tests/test_backends.py``). One
    ``Core`` for the process's lifetime frees no stack; it is also OpenVINO's own advice.
    ``Core`` is thread-safe; the settings a backend needs go to ``compile_model``.
    """
    global _core
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin says this CPU can compute in (FP32, BF16, FP16, INT8, ...)."""
    return tuple(core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))


def is_quantized(model: ov.Model) -> bool:
    """An INT8 IR from NNCF carries FakeQuantize nodes (or compressed int8 weights)."""
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def metadata_of(model: ov.Model) -> dict[str, str]:
    """The ONNX file's ``metadata_props``; OpenVINO keeps them under ``framework`` (also in
    an IR it saves, so the INT8 model keeps its class names)."""
    if not model.has_rt_info(["framework"]):
        return {}
    section = model.get_rt_info()["framework"]
    return {str(key): section[key].astype(str) for key in section}


def cache_config(folder: Path) -> dict[str, object]:
    """``compile_model`` settings that keep compiled models in ``folder`` when it can be
    written (per compile, not on the shared ``Core``: each backend may name its own); a
    read-only filesystem only costs the next start a full compile, so it is a warning."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("openvino: no compiled-model cache in %s (%s); every start compiles the model", folder, exc)
        return {}
    return {"CACHE_DIR": str(folder)}


class OpenVinoBackend:
    def __init__(self, path: Path, *, precision: str = "auto", threads: int = 0,
                 cache_dir: Path | None = None) -> None:
        try:
            model = core().read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise BackendError(f"openvino cannot read {path}: {exc}") from exc
        ranks = [p.get_partial_shape().rank for p in (*model.inputs, *model.outputs)]
        if len(model.inputs) != 1 or len(model.outputs) != 1 or [r.get_length() if r.is_static else -1
                                                                 for r in ranks] != [4, 3]:
            raise BackendError(
                f"{path} is not a YOLO detection export: inputs {[str(i.get_partial_shape()) for i in model.inputs]}, "
                f"outputs {[str(o.get_partial_shape()) for o in model.outputs]}")
        quantized = is_quantized(model)
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if cache_dir is not None:
            config.update(cache_config(cache_dir / "openvino"))
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision == "int8" and not quantized:
            raise BackendError(f"{path} is not an INT8 model (no FakeQuantize nodes); make one with "
                               "`python -m rtc_server.models quantize`")
        if quantized and precision not in ("auto", "int8"):
            raise BackendError(f"{path} is an INT8 model; it runs as int8, not {precision}")
        if precision in _HINTS:
            hint, capability = _HINTS[precision]
            capabilities = cpu_capabilities()
            if capability not in capabilities:
                raise BackendError(f"this CPU cannot run {precision} in OpenVINO (it offers "
                                   f"{', '.join(capabilities)})")
            config["INFERENCE_PRECISION_HINT"] = hint
        self._model, self._config, self._path = model, config, path
        shape = model.inputs[0].get_partial_shape()
        #: A dynamic model is compiled once per input size, batch 1 (``_compiled_for``).
        self._dynamic = not shape.is_static
        self._compiled_by_hw: dict[tuple[int, int], ov.CompiledModel] = {}
        self._dynamic_compiled: ov.CompiledModel | None = None
        self._lock = threading.Lock()
        # The first compile is the size a 640x480 camera frame runs at (rect letterbox), the
        # one the warm-up runs: start-up pays one compile, not two (cold start, docs/benchmarks.md).
        first = self._compile(model) if not self._dynamic else self._compiled_for(*CAMERA_INPUT_HW)
        self._static_compiled = None if self._dynamic else first
        run_in = first.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        ran = "int8" if quantized else _TYPE_NAMES.get(run_in, run_in)
        if precision not in ("auto", ran):
            raise BackendError(f"openvino was asked for {precision} but runs {ran}")
        element = model.inputs[0].get_element_type()
        dtype = np.dtype(np.float16) if element == ov.Type.f16 else np.dtype(np.float32)
        channels = model.outputs[0].get_partial_shape()[1]
        self._local = threading.local()
        self.info = BackendInfo(
            name="openvino",
            precision=ran,
            device=DEVICE,
            input_shape=dims([d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape()]),
            input_dtype=dtype,
            providers=tuple(first.get_property("EXECUTION_DEVICES")),
            metadata=metadata_of(model),
            output_channels=channels.get_length() if channels.is_static else None,
        )
        #: What the non-INT8 parts of an INT8 model compute in (bf16 or f32).
        self.activation_precision = _TYPE_NAMES.get(run_in, run_in)

    def _compile(self, model: ov.Model) -> ov.CompiledModel:
        try:
            return core().compile_model(model, DEVICE, self._config)
        except Exception as exc:
            raise BackendError(f"openvino cannot compile {self._path} for {DEVICE}: {exc}") from exc

    def _compiled_for(self, height: int, width: int) -> ov.CompiledModel:
        """The model reshaped to ``[1, 3, height, width]`` and compiled, once per size.

        A static shape measured 10-15 % faster per frame than the dynamic model on this
        project's CPUs (docs/benchmarks.md); a new size costs one compile (~0.2 s, less from
        the cache dir), and the warm-up compiles the sizes camera frames take.
        """
        key = (height, width)
        compiled = self._compiled_by_hw.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled_by_hw.get(key)
                if compiled is None and len(self._compiled_by_hw) >= MAX_STATIC_SHAPES:
                    # Memory stays bounded (each compile holds its own buffers): sizes past
                    # the first few (odd /predict images) share one dynamic-shape compile.
                    if self._dynamic_compiled is None:
                        self._dynamic_compiled = self._compile(self._model)
                    return self._dynamic_compiled
                if compiled is None:
                    model = self._model.clone()
                    model.reshape({model.inputs[0]: ov.PartialShape([1, 3, height, width])})
                    compiled = self._compiled_by_hw[key] = self._compile(model)
        return compiled

    def _request(self, compiled: ov.CompiledModel) -> ov.InferRequest:
        # One infer request per calling thread and compiled model: requests are not
        # thread-safe, compiled models are (a scheduler may call from several workers).
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        request = requests.get(id(compiled))
        if request is None:
            request = requests[id(compiled)] = compiled.create_infer_request()
        return request

    def _infer(self, compiled: ov.CompiledModel, blob: np.ndarray) -> np.ndarray:
        request = self._request(compiled)
        request.infer({0: blob})
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the request reuses it

    def run(self, blob: np.ndarray) -> np.ndarray:
        if self._static_compiled is not None:  # a static-shape model: as it is
            return self._infer(self._static_compiled, blob)
        compiled = self._compiled_for(blob.shape[2], blob.shape[3])
        if len(blob) == 1:
            return self._infer(compiled, blob)
        # A batch runs image by image on the batch-1 compile: on a CPU a batch gains little
        # per image, and a compile per batch size would stall the first batch of each size.
        return np.concatenate([self._infer(compiled, blob[i:i + 1]) for i in range(len(blob))])
