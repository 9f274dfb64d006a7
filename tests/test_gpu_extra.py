"""The ``gpu`` extra on a machine without a GPU: onnxruntime-gpu imports cleanly beside the
project, offers CUDA and TensorRT, and a provider that cannot load (no CUDA libraries, no
GPU) stops the server with onnxruntime's own reason instead of a silent CPU fallback.

Runs in ``.venv-gpu`` (``make gpu-venv``: onnxruntime-gpu first on the path, the project's
packages after it), as real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT
from .helpers import cannot_run, free_port

GPU_PYTHON = ROOT / ".venv-gpu" / "bin" / "python"


@pytest.fixture(scope="module")
def gpu_python() -> Path:
    if not GPU_PYTHON.exists():
        cannot_run("no .venv-gpu with onnxruntime-gpu (run `make gpu-venv`)")
    return GPU_PYTHON


def _run(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_gpu_wheel_imports_cleanly_and_offers_cuda(gpu_python: Path) -> None:
    proc = _run(gpu_python, "import json, onnxruntime as ort, rtc_server.engine.backends.onnxruntime as b; "
                            "print(json.dumps([ort.__file__, ort.get_device(), b.available_providers()]))")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    path, device, providers = json.loads(proc.stdout)
    assert ".venv-gpu" in path and device == "GPU"
    assert {"CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"} <= set(providers)


def test_the_cpu_provider_still_runs_under_the_gpu_wheel(gpu_python: Path, model_file: Path) -> None:
    proc = _run(gpu_python, f"""
from pathlib import Path
import cv2
from rtc_server.engine.loader import load_detector
from rtc_server.engine.yolo import Thresholds
d = load_detector(Path({str(model_file)!r}), providers=["CPUExecutionProvider"])
rgb = cv2.cvtColor(cv2.imread("tests/fixtures/bus.jpg"), cv2.COLOR_BGR2RGB)
(r,) = d.detect([rgb], [Thresholds()])
print(d.info.backend, ",".join(d.info.providers), r.detections[0].label)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["onnxruntime", "CPUExecutionProvider", "bus"]


@pytest.mark.parametrize("providers", ["CUDAExecutionProvider,CPUExecutionProvider",
                                       "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider"])
def test_a_gpu_provider_that_cannot_load_stops_the_server(gpu_python: Path, model_file: Path, tmp_path: Path,
                                                          providers: str) -> None:
    env = {**os.environ, "RTC_HOST": "127.0.0.1", "RTC_PORT": str(free_port()), "RTC_ICE_ADDRESSES": "127.0.0.1",
           "RTC_ICE_ALLOW_NETWORKS": "127.0.0.0/8",
           "RTC_MODEL": str(model_file), "RTC_PROVIDERS": providers, "RTC_BACKEND_CACHE": str(tmp_path)}
    proc = subprocess.run([str(gpu_python), "-m", "rtc_server"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    refusal = [line for line in proc.stderr.splitlines() if line.startswith("rtc-server:")]
    assert refusal, proc.stderr
    first = providers.split(",")[0]
    assert f"execution provider {first}" in refusal[0] and "did not load" in refusal[0]
    assert "onnxruntime fell back to CPUExecutionProvider" in refusal[0]
    # onnxruntime's own reason is quoted: here, CUDA's libraries are missing.
    assert "onnxruntime said:" in refusal[0] and ".so" in refusal[0], refusal[0]
    assert "\x1b[" not in refusal[0] and "Traceback" not in proc.stderr
