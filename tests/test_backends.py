"""Backends behind one detector: onnxruntime and OpenVINO, what they report, what they refuse.

Every test runs the real YOLO11n (or a model derived from it in this session: a static
640x640 export, an FP16 export, a 3-class head) on the real runtimes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from rtc_server.engine import accuracy
from rtc_server.engine.backends.openvino import cpu_capabilities
from rtc_server.engine.detector import ModelError
from rtc_server.engine.loader import load_detector
from rtc_server.engine.yolo import Thresholds

from .conftest import ROOT

BACKENDS = ("onnxruntime", "openvino")


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _labels(result) -> list[str]:
    return [d.label for d in result.detections]


def _same(a, b, iou: float = 0.9, score: float = 0.05) -> None:
    """Same detections up to reduced-precision rounding: classes in order, boxes, scores."""
    assert _labels(a) == _labels(b)
    for x, y in zip(a.detections, b.detections, strict=True):
        assert _iou(list(x.box), list(y.box)) >= iou and abs(x.score - y.score) <= score, (x, y)


@pytest.fixture(scope="module")
def reference(model_file: Path):
    return load_detector(model_file, backend="onnxruntime")


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_reports_what_it_runs(backend: str, model_file: Path) -> None:
    detector = load_detector(model_file, backend=backend, precision="f32")
    info = detector.info
    assert (info.backend, info.precision) == (backend, "f32")
    assert info.input_shape == (None, 3, None, None)  # the dynamic export
    assert info.providers == (("CPUExecutionProvider",) if backend == "onnxruntime" else ("CPU",))
    model = info.to_dict()
    assert model["backend"] == backend and model["precision"] == "f32"
    assert set(model) == {"name", "version", "sha256", "backend", "precision"}


def test_openvino_default_precision_is_what_the_cpu_offers(model_file: Path) -> None:
    """Unforced, OpenVINO runs bf16 where the CPU has it (AVX512_BF16/AMX), and says so."""
    info = load_detector(model_file, backend="openvino").info
    assert info.precision == ("bf16" if "BF16" in cpu_capabilities() else "f32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_give_the_same_detections_as_single_frames(backend: str, model_file: Path,
                                                           bus_frame: np.ndarray) -> None:
    detector = load_detector(model_file, backend=backend, precision="f32")
    frames = [bus_frame, np.ascontiguousarray(bus_frame[:, ::-1]), bus_frame]
    thresholds = [Thresholds()] * 3
    batched = detector.detect(frames, thresholds)
    assert [r.batch_size for r in batched] == [3, 3, 3]
    for frame, result in zip(frames, batched, strict=True):
        (single,) = detector.detect([frame], [Thresholds()])
        _same(result, single, iou=0.99, score=0.002)
    assert "bus" in _labels(batched[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reused_input_buffers_never_leak_one_frame_into_another(backend: str, model_file: Path,
                                                                bus_frame: np.ndarray) -> None:
    """Each worker thread reuses its input buffers frame after frame: a blank frame after a
    bus finds nothing, mixed sizes in one batch match single runs, and two threads running
    different frames at once each get their own detections."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    detector = load_detector(model_file, backend=backend, precision="f32")
    blank = np.full_like(bus_frame, 114)
    wide = np.ascontiguousarray(cv2.resize(bus_frame, (1280, 720)))
    (first,) = detector.detect([bus_frame], [Thresholds()])
    assert "bus" in _labels(first)
    assert detector.detect([blank], [Thresholds()])[0].detections == []
    _same(detector.detect([bus_frame], [Thresholds()])[0], first, iou=0.999, score=1e-4)
    mixed = detector.detect([wide, blank, bus_frame], [Thresholds()] * 3)
    assert [r.batch_size for r in mixed] == [1, 2, 2]
    assert mixed[1].detections == []
    _same(mixed[2], first, iou=0.99, score=0.002)
    _same(mixed[0], detector.detect([wide], [Thresholds()])[0], iou=0.999, score=1e-4)
    with ThreadPoolExecutor(2) as pool:
        frames = [bus_frame, blank] * 6
        results = list(pool.map(lambda f: detector.detect([f], [Thresholds()])[0], frames))
    for frame, result in zip(frames, results, strict=True):
        if frame is blank:
            assert result.detections == []
        else:
            _same(result, first, iou=0.999, score=1e-4)


def test_input_buffers_are_one_per_size_as_deep_as_the_largest_batch() -> None:
    """Varying batch sizes reuse one buffer per input size (no fresh memory per batch);
    only a few sizes are kept."""
    from rtc_server.engine.detector import _InputBuffers

    buffers = _InputBuffers()
    f32 = np.dtype(np.float32)
    four = buffers.get(4, 480, 640, f32)
    assert four.shape == (4, 3, 480, 640) and four.flags.c_contiguous
    two = buffers.get(2, 480, 640, f32)
    assert two.shape == (2, 3, 480, 640) and np.shares_memory(two, four)
    assert not np.shares_memory(buffers.get(1, 384, 640, f32), four)
    for size in range(1, _InputBuffers.KEEP + 1):  # enough other sizes to evict 480x640
        buffers.get(1, 32 * size, 640, f32)
    assert not np.shares_memory(buffers.get(1, 480, 640, f32), four)


def test_bf16_finds_what_f32_finds(model_file: Path, bus_frame: np.ndarray, reference) -> None:
    if "BF16" not in cpu_capabilities():
        pytest.skip("this CPU has no bf16 (AVX512_BF16/AMX)")  # not a missing dependency
    (fast,) = load_detector(model_file, backend="openvino", precision="bf16").detect([bus_frame], [Thresholds()])
    (ref,) = reference.detect([bus_frame], [Thresholds()])
    assert fast.model.precision == "bf16"
    _same(fast, ref)


# ----- execution providers: no silent CPU fallback -----------------------------------------
def test_a_provider_this_onnxruntime_lacks_is_refused_saying_why(model_file: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: tested on CPU builds")  # not a missing dependency
    with pytest.raises(ModelError) as err:
        load_detector(model_file, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    text = str(err.value)
    assert "CUDAExecutionProvider is not in this onnxruntime build" in text
    assert "gpu" in text and "CPUExecutionProvider" in text


def test_the_cpu_provider_asked_for_explicitly_loads(model_file: Path, bus_frame: np.ndarray) -> None:
    detector = load_detector(model_file, backend="onnxruntime", providers=["CPUExecutionProvider"])
    assert detector.info.providers == ("CPUExecutionProvider",)
    assert "bus" in _labels(detector.detect([bus_frame], [Thresholds()])[0])


def test_tensorrt_f16_options_are_built_from_the_settings(tmp_path: Path) -> None:
    """The GPU path's provider options (applied where the provider loads; built the same here)."""
    from rtc_server.engine.backends.onnxruntime import provider_options

    opts = provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                            "f16", tmp_path)
    assert opts[0] == {"trt_fp16_enable": "True", "trt_engine_cache_enable": "True",
                       "trt_engine_cache_path": str(tmp_path / "tensorrt")}
    assert opts[1:] == [{}, {}]


def _serve_and_wait(env: dict[str, str], tmp_path: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    from .helpers import free_port

    full = {**os.environ, "RTC_HOST": "127.0.0.1", "RTC_PORT": str(free_port()), "RTC_ICE_ADDRESSES": "127.0.0.1",
            "RTC_ICE_ALLOW_NETWORKS": "127.0.0.0/8",
            "RTC_BACKEND_CACHE": str(tmp_path / "cache"), **env}
    return subprocess.run([sys.executable, "-m", "rtc_server"], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


def test_server_refuses_to_start_on_a_provider_that_does_not_load(model_file: Path, tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine's onnxruntime has CUDA")  # not a missing dependency
    proc = _serve_and_wait({"RTC_MODEL": str(model_file), "RTC_PROVIDERS": "CUDAExecutionProvider"}, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "CUDAExecutionProvider" in proc.stderr and "not in this onnxruntime build" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_precision_a_backend_cannot_run_is_refused(model_file: Path) -> None:
    with pytest.raises(ModelError, match="onnxruntime runs this model in its own precision"):
        load_detector(model_file, backend="onnxruntime", precision="bf16")
    with pytest.raises(ModelError, match="no INT8 model"):
        load_detector(model_file, backend="openvino", precision="int8")
    if "FP16" not in cpu_capabilities():
        with pytest.raises(ModelError, match="this CPU cannot run f16"):
            load_detector(model_file, backend="openvino", precision="f16")


# ----- models users bring --------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_static_640_export_is_letterboxed_to_its_own_size(backend: str, static_model: Path, model_file: Path,
                                                           bus_frame: np.ndarray) -> None:
    detector = load_detector(static_model, backend=backend, precision="f32", rect=True)
    assert detector.info.input_shape == (1, 3, 640, 640)
    results = detector.detect([bus_frame, bus_frame], [Thresholds()] * 2)  # batch 2 on a batch-1 model
    assert [r.input_hw for r in results] == [(640, 640)] * 2
    # Same as the dynamic model letterboxed square: the static export is the same network.
    (square,) = load_detector(model_file, backend=backend, precision="f32", rect=False).detect(
        [bus_frame], [Thresholds()])
    for result in results:
        _same(result, square, iou=0.99, score=0.002)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_fp16_export_runs(backend: str, fp16_model: Path, model_file: Path, bus_frame: np.ndarray) -> None:
    detector = load_detector(fp16_model, backend=backend)
    assert detector.info.input_shape == (1, 3, 640, 640)
    if backend == "onnxruntime":
        assert detector.info.precision == "f16"
    (half,) = detector.detect([bus_frame], [Thresholds()])
    (full,) = load_detector(model_file, backend="onnxruntime", rect=False).detect([bus_frame], [Thresholds()])
    _same(half, full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_with_another_class_count(backend: str, three_class_model: Path, bus_frame: np.ndarray,
                                          reference) -> None:
    detector = load_detector(three_class_model, backend=backend, precision="f32")
    assert detector.info.class_names == ("person", "bicycle", "car")
    (result,) = detector.detect([bus_frame], [Thresholds()])
    (full,) = reference.detect([bus_frame], [Thresholds()])
    people = [d for d in full.detections if d.label == "person"]
    assert set(_labels(result)) <= {"person", "bicycle", "car"} and people
    # The people the full model sees with confidence, the 3-class head sees the same.
    assert all(any(_iou(list(p.box), list(d.box)) > 0.95 for d in result.detections) for p in people
               if p.score > 0.5)


def test_a_model_whose_names_do_not_match_its_head_exits_1(model_file: Path, tmp_path: Path) -> None:
    from .derived_models import class_subset

    bad = class_subset(model_file, tmp_path / "mismatch.onnx", keep=3, names={0: "person", 1: "bicycle"})
    with pytest.raises(ModelError, match="output has 7 channels but the metadata names 2 classes"):
        load_detector(bad, backend="onnxruntime")
    proc = _serve_and_wait({"RTC_MODEL": str(bad)}, tmp_path)
    assert proc.returncode == 1 and "7 channels but the metadata names 2 classes" in proc.stderr, proc.stderr


# ----- auto ------------------------------------------------------------------------------------
def test_auto_runs_a_path_documented_within_bounds_and_caches_the_choice(model_file: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    detector = load_detector(model_file, cache_dir=tmp_path)
    info = detector.info
    v = accuracy.verdict(info.sha256, info.backend, info.precision)
    assert v.eligible, v
    assert detector.auto_trials is not None
    rows = {(r["backend"], r["precision"]): r for r in detector.auto_trials}
    assert rows["onnxruntime", "f32"]["ms_p50"] > 0  # the reference was timed
    assert all(r["eligible"] for r in detector.auto_trials if r["ms_p50"] is not None)
    cached = json.loads((tmp_path / "auto.json").read_text())
    (entry,) = cached.values()
    assert (entry["backend"], entry["precision"]) == (info.backend, info.precision)
    caplog.clear()
    again = load_detector(model_file, cache_dir=tmp_path)
    assert (again.info.backend, again.info.precision) == (info.backend, info.precision)
    assert "cached choice" in caplog.text


def test_auto_never_runs_a_path_out_of_bounds(model_file: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A record saying bf16 loses 2 points (and OpenVINO f32 was never measured) leaves
    onnxruntime f32 the only path auto may run, however fast the others are."""
    from rtc_server.engine.artifacts import sha256_of

    sha = sha256_of(model_file)
    record = {"records": [
        {"model_sha256": sha, "backend": "onnxruntime", "precision": "f32", "artifact_sha256": None,
         "map50_95": 0.4863, "map50": 0.66},
        {"model_sha256": sha, "backend": "openvino", "precision": "bf16", "artifact_sha256": None,
         "map50_95": 0.4663, "map50": 0.64}]}
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(record))
    monkeypatch.setattr(accuracy, "RECORD_FILE", path)
    v = accuracy.verdict(sha, "openvino", "bf16")
    assert not v.eligible and "loses 2.00 mAP50-95 points" in v.reason
    assert accuracy.verdict(sha, "openvino", "f32").reason == "no accuracy record for this model file"
    detector = load_detector(model_file, cache_dir=tmp_path)
    assert (detector.info.backend, detector.info.precision) == ("onnxruntime", "f32")


def test_auto_runs_an_unmeasured_model_on_the_reference(static_model: Path, tmp_path: Path) -> None:
    detector = load_detector(static_model, cache_dir=tmp_path)
    assert (detector.info.backend, detector.info.precision) == ("onnxruntime", "f32")
    assert not (tmp_path / "auto.json").exists()  # nothing to choose between: no trials


def test_the_committed_record_documents_the_default_model(model_file: Path) -> None:
    """The record in the package comes from a real accuracy run on this model (``python -m
    rtc_server.models accuracy --write``, or ``bench.accuracy``, its bench entry and former home)."""
    from rtc_server.models.fetch import DEFAULT_SOURCE

    records = accuracy.load_records()
    ref = accuracy.find(records, DEFAULT_SOURCE.sha256, "onnxruntime", "f32")
    assert ref is not None and 0.40 < ref["map50_95"] < 0.60 and ref["command"].startswith(
        ("python -m rtc_server.models accuracy", "python -m bench.accuracy"))
    assert all(r["images"] == 128 for r in records)


# ----- the backend is named wherever the model is ------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
async def test_readyz_predict_and_metrics_name_the_backend(backend: str, model_file: Path, aiohttp_client,
                                                           make_app) -> None:
    import asyncio

    detector = load_detector(model_file, backend=backend)
    client = await aiohttp_client(make_app(detector))
    async with asyncio.timeout(30):
        while (await client.get("/readyz")).status != 200:
            await asyncio.sleep(0.05)
    ready = await (await client.get("/readyz")).json()
    want = {"backend": backend, "precision": detector.info.precision}
    assert ready["model"].items() >= want.items()
    from .conftest import FIXTURES

    answer = await client.post("/predict", data=(FIXTURES / "bus.jpg").read_bytes(),
                               headers={"Content-Type": "image/jpeg"})
    message = await answer.json()
    assert message["model"].items() >= want.items() and message["detections"][0]["label"] == "bus"
    metrics = await (await client.get("/metrics")).text()
    assert f'backend="{backend}",' in metrics and f'precision="{detector.info.precision}"' in metrics


def test_openvino_compiles_a_few_sizes_statically_then_shares_a_dynamic_compile(model_file: Path,
                                                                               bus_rgb: np.ndarray) -> None:
    """Any image size works; memory stays bounded however many sizes /predict images bring."""
    from rtc_server.engine.backends.openvino import MAX_STATIC_SHAPES

    detector = load_detector(model_file, backend="openvino", precision="f32")
    reference = load_detector(model_file, backend="onnxruntime")
    sizes = [(640, 160 + 32 * i) for i in range(MAX_STATIC_SHAPES + 2)]  # (w, h): as many input sizes
    for w, h in sizes:
        image = np.ascontiguousarray(bus_rgb[:h * 2:2, :w])
        (ours,) = detector.detect([image], [Thresholds()])
        (ref,) = reference.detect([image], [Thresholds()])
        assert ours.input_hw == ref.input_hw
        _same(ours, ref, iou=0.99, score=0.002)
    backend = detector.backend
    assert len(backend._compiled_by_hw) == MAX_STATIC_SHAPES and backend._dynamic_compiled is not None


# ----- one OpenVINO Core per process (a SIGSEGV on SIGTERM otherwise) -----------------------------
_SIGNAL_AFTER_FREEING_TWO = """
import gc, os, signal, sys
from pathlib import Path
from rtc_server.engine.backends.openvino import load
first = load(Path(sys.argv[1]), precision="f32")
second = load(Path(sys.argv[1]))
del first; gc.collect()   # freed first-in-first-out, as auto frees its trials
del second; gc.collect()
signal.signal(signal.SIGUSR1, lambda *_: print("handled", flush=True))  # on the alternate stack
os.kill(os.getpid(), signal.SIGUSR1)
print("alive", flush=True)
"""


def test_freeing_openvino_backends_in_any_order_leaves_signals_deliverable(model_file: Path) -> None:
    """OpenVINO's CPU plugin gives the thread that makes a ``Core`` a signal stack and unmaps
    it with that ``Core``; freed out of order, separate ``Core``s left the thread's stack
    unmapped and the next signal was a SIGSEGV (-11). The backends share one ``Core``."""
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_FREEING_TWO, str(model_file)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.split() == ["handled", "alive"]


_SERVE_WITH_THE_REFERENCE_WINNING = """
import sys
from rtc_server.engine import autoselect
autoselect.MARGIN = 1.0  # the reference wins whatever the trials measure: the case under test
from rtc_server.__main__ import main
sys.exit(main())
"""


def test_sigterm_after_auto_trials_chose_onnxruntime_exits_cleanly(model_file: Path, tmp_path: Path) -> None:
    """What CI saw once under load (the container exited 139 on ``docker stop``): auto timed
    both OpenVINO paths, onnxruntime won, the two OpenVINO trials were freed, and SIGTERM
    then crashed the server instead of shutting it down."""
    from .helpers import ServerProcess

    server = ServerProcess(tmp_path / "server.log", entry=("-c", _SERVE_WITH_THE_REFERENCE_WINNING), env={
        "RTC_MODEL": str(model_file), "RTC_BACKEND": "auto", "RTC_BACKEND_CACHE": str(tmp_path / "cache")})
    try:
        server.start()
        server.signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    finally:
        server.kill()
    text = server.log
    chosen = [line for line in text.splitlines() if line.endswith("<- chosen")]
    assert len(chosen) == 1 and "onnxruntime f32" in chosen[0], text[-3000:]
    assert "openvino    bf16" in text or "openvino    f32" in text, text[-3000:]  # OpenVINO was tried
    assert code == 0 and "exited cleanly" in text, (code, text[-3000:])
