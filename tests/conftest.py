"""Shared fixtures: the real model, loopback-only settings, a served app, server processes,
and the restoring of the process-wide aiortc/aioice adaptations after every test."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
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
from rtc_server.store.config import SQLITE_FILE, StoreConfig
from rtc_server.store.store import open_store
from rtc_server.webrtc.ice import use_host_addresses

from .helpers import COCO128, FIXTURES, ROOT, SHARED, ServerProcess, cannot_run
from .stub_detector import StubDetector

__all__ = ["COCO128", "FIXTURES", "ROOT", "SHARED"]  # kept importable for older imports


# ----- pytest-xdist: what runs together on one worker -------------------------------------
#: ``make test`` runs the suite on several workers (``-n <cores + 2> --dist loadgroup``); the tests
#: of a group run one after another on one worker. The heavy groups each hold something no
#: two workers should start at once (a private dockerd; Chromium; GStreamer's RTSP server
#: and WHIP client; NNCF's calibration), and a module whose fixtures are module-scoped (a
#: server, a browser, derived models) stays whole so they are built once. Groups go out in
#: this order, the longest first (so the longest does not start last); then every other
#: test, one at a time, to whichever worker is free.
#: ``tests/test_suite_rules.py`` checks that every module with such a fixture is listed.
XDIST_GROUPS = {
    "test_container.py": "container",
    "test_browser.py": "browser",
    "test_browser_sessions.py": "browser",
    "test_browser_models.py": "browser",
    "test_quantize.py": "quantize",
    "test_backends.py": "backends",
    "test_pull.py": "gstreamer",
    "test_whip_gstreamer.py": "gstreamer",
    "test_model_sources.py": "model_sources",
    "test_parity.py": "parity",
    "test_pull_policy.py": "pull_policy",
    "test_fuzz.py": "fuzz",
    "test_models.py": "models",
    "test_gpu_extra.py": "gpu_extra",
    "test_deploy_manifests.py": "deploy_manifests",
    "test_hostile_pull.py": "hostile_pull",
    "test_hostile_http.py": "hostile_http",
    "test_durable.py": "durable",
    "test_tracking_wire.py": "tracking_wire",
}


def xdist_group(nodeid: str) -> str | None:
    """The group of a test by its node id (``tests/test_x.py::test_y[...]``), None for none."""
    return XDIST_GROUPS.get(nodeid.split("::", 1)[0].rsplit("/", 1)[-1])


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: no error without it (-p no:xdist)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup`` by ``XDIST_GROUPS``. xdist's own loadgroup reads
    ``@pytest.mark.xdist_group`` through a node-id suffix that pytest 9.2 no longer lets it
    set (seen here: every group split across workers), so the grouping is done by scope."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    order = {group: rank for rank, group in enumerate(dict.fromkeys(XDIST_GROUPS.values()))}

    class GroupScheduling(LoadScopeScheduling):
        def __init__(self, config: pytest.Config, log: object = None) -> None:
            super().__init__(config, log)  # type: ignore[arg-type]
            config.option.loadscopereorder = False  # our order, not by test count

        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid) or nodeid

        def schedule(self) -> None:
            if self.collection is None:  # the first distribution: groups first, longest first
                for node, collection in self.registered_collections.items():
                    self.registered_collections[node] = sorted(
                        collection, key=lambda nodeid: order.get(xdist_group(nodeid) or "", len(order)))
            super().schedule()

    return GroupScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def _loopback_ice_baseline() -> None:
    """Between tests, in-process peers offer 127.0.0.1 only: a test that forgets to pin ICE
    still never sends to this machine's real interfaces."""
    use_host_addresses(["127.0.0.1"])


#: Set when anything called ``gc.freeze``/``gc.unfreeze`` during the current test.
_FREEZES: list[bool] = [False]


@pytest.fixture(scope="session", autouse=True)
def _freeze_what_the_session_imported() -> Iterator[None]:
    """Every module the run imported (numpy, aiortc, the test modules...) lives as long as
    the worker: frozen once, the full collections a test's server makes (after a stream
    closes: ``StreamRegistry``) walk only what the tests made since. The apps the fixtures
    build do not freeze (``create_app(freeze_gc=False)``): each start-up would walk this
    whole process, ~0.1 s. ``gc.freeze``/``unfreeze`` are watched (``_restore_process_globals``
    undoes a test's freeze; counting the frozen objects instead walks them all)."""
    freeze, unfreeze = gc.freeze, gc.unfreeze

    def watched(call: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            _FREEZES[0] = True
            call()
        return run

    gc.collect()
    freeze()
    gc.freeze, gc.unfreeze = watched(freeze), watched(unfreeze)  # type: ignore[method-assign]
    yield
    gc.freeze, gc.unfreeze = freeze, unfreeze  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _restore_process_globals() -> Iterator[None]:
    """``create_app`` and some tests install process-wide adaptations of aiortc/aioice
    (``use_host_addresses``, ``use_udp_ports``, ``use_marker_release``, ``use_dtls_interop``);
    whatever a test installed is undone after it, so no test depends on what an earlier one left."""
    saved = (aioice.ice.get_host_addresses, aioice.ice.Connection.get_component_candidates,
             aiortc.rtcrtpreceiver.JitterBuffer, RTCCertificate._create_ssl_context)
    yield
    if _FREEZES[0]:
        # A server that froze at start-up (``create_app``'s default) or a test that froze or
        # unfroze: what it froze must not stay uncollectable for the rest of the run, and
        # what the session imported goes back to the permanent generation.
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        _FREEZES[0] = False
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


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty store at the head revision, made once per worker by the server's own code
    (``open_store``): each test's copy starts as a server's second start does, without
    running the migrations again (~50 ms of CPU each; test_store runs them from nothing)."""
    folder = tmp_path_factory.mktemp("store-template")

    async def make() -> None:
        store = await open_store(StoreConfig.for_data_dir(folder))
        await store.close()

    asyncio.run(make())
    return folder / SQLITE_FILE


def data_dir(tmp_path: Path, template: Path) -> Path:
    """``tmp_path/data`` holding a copy of the template store."""
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(template, folder / SQLITE_FILE)
    return folder


@pytest.fixture
def settings(model_file: Path, tmp_path: Path, store_template: Path) -> Settings:
    # Each test its own store (issue 22): a stream one test POSTs never comes back in another.
    return Settings(model=model_file, ice_addresses=("127.0.0.1",), ice_allow_networks=("127.0.0.0/8",),
                    port=8080, data_dir=data_dir(tmp_path, store_template))


@pytest.fixture(scope="session")
def detector(model_file: Path) -> Detector:
    """One loaded model for the whole run (loading is the slow part, detect is stateless).
    One backend thread: the suite runs a worker per core, and a runtime's extra threads only
    spin-wait for a core another worker holds (measured: a fifth less CPU per frame for
    OpenVINO, nearly half for onnxruntime), with the same detections."""
    return load_default_detector(Settings(model=model_file), threads=1)


@pytest.fixture
def make_app(settings: Settings, detector: Detector) -> Callable[..., web.Application]:
    def factory(detector_override: Detector | None = None, **overrides: object) -> web.Application:
        s = Settings(**{**settings.__dict__, **overrides})
        return create_app(s, detector_override or detector, freeze_gc=False)

    return factory


# ----- the stub detector: plumbing tests run without the model ------------------------------
@pytest.fixture
def stub() -> StubDetector:
    """A fresh ``StubDetector`` (fixed boxes, instant, ungated) for this test."""
    return StubDetector()


@pytest.fixture
def stub_settings(tmp_path: Path, store_template: Path) -> Settings:
    """Loopback settings that name no model file: the app serves whatever detector it is
    handed. Each test its own store (issue 22), as ``settings``."""
    return Settings(model=Path("yolo11n.onnx"), ice_addresses=("127.0.0.1",), ice_allow_networks=("127.0.0.0/8",),
                    port=8080, data_dir=data_dir(tmp_path, store_template))


@pytest.fixture
def stub_app(stub_settings: Settings, stub: StubDetector) -> Callable[..., web.Application]:
    """``make_app`` with the stub: ``stub_app(**settings)``, or ``stub_app(detector_override=d)``
    for another double (a gated ``StubDetector``). No model is loaded, so these tests also
    run on a fresh clone without one."""
    def factory(detector_override: Detector | None = None, **overrides: object) -> web.Application:
        s = Settings(**{**stub_settings.__dict__, **overrides})
        return create_app(s, detector_override or stub, freeze_gc=False)

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
