"""Shared fixtures: the real model, loopback-only settings, a served app, server processes,
and the restoring of the process-wide aiortc/aioice adaptations after every test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import aioice.ice
import aiortc.rtcrtpreceiver
import cv2
import numpy as np
import pytest
from aiohttp import web
from aiortc.rtcdtlstransport import RTCCertificate

from rtc_server.app import create_app, load_default_detector
from rtc_server.config import Settings
from rtc_server.engine.detector import Detector
from rtc_server.webrtc.ice import use_host_addresses

from .helpers import COCO128, FIXTURES, ROOT, SHARED, ServerProcess, cannot_run

__all__ = ["COCO128", "FIXTURES", "ROOT", "SHARED"]  # kept importable for older imports


@pytest.fixture(scope="session", autouse=True)
def _loopback_ice_baseline() -> None:
    """Between tests, in-process peers offer 127.0.0.1 only: a test that forgets to pin ICE
    still never sends to this machine's real interfaces."""
    use_host_addresses(["127.0.0.1"])


@pytest.fixture(autouse=True)
def _restore_process_globals() -> Iterator[None]:
    """``create_app`` and some tests install process-wide adaptations of aiortc/aioice
    (``use_host_addresses``, ``use_udp_ports``, ``use_marker_release``, ``use_dtls_interop``);
    whatever a test installed is undone after it, so no test depends on what an earlier one left."""
    saved = (aioice.ice.get_host_addresses, aioice.ice.Connection.get_component_candidates,
             aiortc.rtcrtpreceiver.JitterBuffer, RTCCertificate._create_ssl_context)
    yield
    (aioice.ice.get_host_addresses, aioice.ice.Connection.get_component_candidates,  # type: ignore[method-assign]
     aiortc.rtcrtpreceiver.JitterBuffer, RTCCertificate._create_ssl_context) = saved


def model_path() -> Path | None:
    """The real YOLO11n: $RTC_TEST_MODEL, ../shared (CI), or models/ (fetched by make)."""
    candidates = [os.environ.get("RTC_TEST_MODEL", ""), SHARED / "models" / "yolo11n.onnx",
                  ROOT / "models" / "yolo11n.onnx"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def model_file() -> Path:
    path = model_path()
    if path is None:
        cannot_run("no model: run `make model` or set RTC_TEST_MODEL")
    return path


@pytest.fixture(scope="session")
def bus_rgb() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FIXTURES / "bus.jpg")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def bus_frame(bus_rgb: np.ndarray) -> np.ndarray:
    """bus.jpg letterboxed into a 640x480 camera-like frame."""
    h, w = bus_rgb.shape[:2]
    scale = 480 / h
    resized = cv2.resize(bus_rgb, (round(w * scale), 480))
    frame = np.zeros((480, 640, 3), np.uint8)
    x = (640 - resized.shape[1]) // 2
    frame[:, x : x + resized.shape[1]] = resized
    return frame


@pytest.fixture
def settings(model_file: Path, tmp_path: Path) -> Settings:
    # Each test its own store (issue 22): a stream one test POSTs never comes back in another.
    return Settings(model=model_file, ice_addresses=("127.0.0.1",), port=8080, data_dir=tmp_path / "data")


@pytest.fixture(scope="session")
def detector(model_file: Path) -> Detector:
    """One loaded model for the whole run (loading is the slow part, detect is stateless)."""
    return load_default_detector(Settings(model=model_file))


@pytest.fixture
def make_app(settings: Settings, detector: Detector) -> Callable[..., web.Application]:
    def factory(detector_override: Detector | None = None, **overrides: object) -> web.Application:
        s = Settings(**{**settings.__dict__, **overrides})
        return create_app(s, detector_override or detector)

    return factory


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``python -m rtc_server`` processes (not waited for); all are killed at the end."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str], args: tuple[str, ...] = (), wait: bool = False) -> ServerProcess:
        process = ServerProcess(tmp_path / f"server-{len(started)}.log", env, args)
        started.append(process)
        return process.start(wait=wait)

    yield start
    for process in started:
        process.kill()


# ----- models users bring (issue 11), derived from the real one per test session -----------
@pytest.fixture(scope="session")
def static_model(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .derived_models import static_copy

    return static_copy(model_file, tmp_path_factory.mktemp("models") / "yolo11n-static640.onnx")


@pytest.fixture(scope="session")
def fp16_model(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .derived_models import fp16_copy

    return fp16_copy(model_file, tmp_path_factory.mktemp("models") / "yolo11n-fp16.onnx")


@pytest.fixture(scope="session")
def three_class_model(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .derived_models import class_subset

    return class_subset(model_file, tmp_path_factory.mktemp("models") / "yolo11n-3class.onnx")
