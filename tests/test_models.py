"""Several models at once: ``/models``, ``/readyz``, ``/metrics``, the model an offer names,
``/predict?model=``, and A/B switching on one live WebRTC stream with control messages.

The second model is derived here from the real YOLO11n (``tests/derived_models.py``): the
same network cut to its first 3 classes (person, bicycle, car), served at input 320 — so
its detections, class names and input size all differ from the default's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.app import create_app, load_models
from rtc_server.config import Settings
from rtc_server.engine.artifacts import sha256_of
from rtc_server.engine.catalog import ModelCatalog
from rtc_server.engine.model_sources import parse_specs
from rtc_server.signaling.context import INFERENCE, REGISTRY

from .conftest import FIXTURES
from .derived_models import class_subset, fails_at_run
from .helpers import ServerFactory, serve, wait_for

SUBSET = ("person", "bicycle", "car")


@pytest.fixture(scope="module")
def subset_model(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_subset(model_file, tmp_path_factory.mktemp("models") / "yolo11n-3cls.onnx")


@pytest.fixture(scope="module")
def catalog(model_file: Path, subset_model: Path) -> ModelCatalog:
    """yolo11n (default, 80 classes, 640) and people (3 classes, 320), each loaded once."""
    return load_models(Settings(models=parse_specs(f"yolo11n={model_file},people={subset_model}#imgsz=320")))


@pytest.fixture
def two_model_app(settings: Settings, catalog: ModelCatalog) -> Callable[..., web.Application]:
    def factory(**overrides: object) -> web.Application:
        return create_app(Settings(**{**settings.__dict__, "rate_limit": 0, **overrides}), catalog)
    return factory


async def test_models_lists_every_model_default_first(
    aiohttp_server: ServerFactory, two_model_app: Callable[..., web.Application], model_file: Path,
    subset_model: Path,
) -> None:
    url = await serve(aiohttp_server, two_model_app())
    async with aiohttp.ClientSession() as http:
        body = await (await http.get(f"{url}/models")).json()
        ready = await (await http.get(f"{url}/readyz")).json()
    models = body["models"]
    assert [m["name"] for m in models] == ["yolo11n", "people"]
    first, second = models
    assert first["default"] is True and second["default"] is False
    assert first["sha256"] == sha256_of(model_file) and second["sha256"] == sha256_of(subset_model)
    # Each model says what it runs: yolo11n what auto chose among its recorded paths; the
    # derived 3-class model has no accuracy record, so auto runs it on the reference.
    from rtc_server.engine import accuracy

    assert accuracy.verdict(first["sha256"], first["backend"], first["precision"]).eligible
    assert (second["backend"], second["precision"]) == ("onnxruntime", "f32")
    assert first["input_size"] == [640, 640] and second["input_size"] == [320, 320]
    assert len(first["class_names"]) == 80 and first["class_names"][5] == "bus"
    assert second["class_names"] == list(SUBSET)
    assert first["version"] == second["version"] == "8.3.250"
    assert all(m["ready"] for m in models)
    assert ready["status"] == "ready" and ready["model"]["name"] == "yolo11n"
    assert ready["models"] == [{"name": "yolo11n", "ready": True}, {"name": "people", "ready": True}]


async def test_predict_picks_the_model_in_the_query(
    aiohttp_server: ServerFactory, two_model_app: Callable[..., web.Application]
) -> None:
    url = await serve(aiohttp_server, two_model_app())
    jpeg = (FIXTURES / "bus.jpg").read_bytes()
    async with aiohttp.ClientSession(headers={"Content-Type": "image/jpeg"}) as http:
        default = await (await http.post(f"{url}/predict", data=jpeg)).json()
        people = await (await http.post(f"{url}/predict?model=people", data=jpeg)).json()
        named = await (await http.post(f"{url}/predict?model=yolo11n", data=jpeg)).json()
        unknown = await http.post(f"{url}/predict?model=yolo99", data=jpeg)
        empty = await http.post(f"{url}/predict?model=", data=jpeg)
        unknown_body = await unknown.json()
    assert default["model"]["name"] == named["model"]["name"] == "yolo11n"
    assert "bus" in {d["label"] for d in default["detections"]}
    assert people["model"]["name"] == "people"
    labels = {d["label"] for d in people["detections"]}
    assert "person" in labels and labels <= set(SUBSET)
    assert people["input_hw"] == [320, 256] and default["input_hw"] == [640, 480]  # 810x1080 at 320 / 640
    assert unknown.status == 400 and unknown_body["error"] == "unknown_model"
    assert "yolo99" in unknown_body["detail"] and "yolo11n, people" in unknown_body["detail"]
    assert empty.status == 400


async def test_offer_with_an_unknown_model_is_refused_and_opens_nothing(
    aiohttp_server: ServerFactory, two_model_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = two_model_app()
    url = await serve(aiohttp_server, app)
    for model, error in (("yolo99", "unknown_model"), (7, "bad_offer")):
        client = DetectionClient(url, ImageTrack(bus_frame, fps=15), model=model)  # type: ignore[arg-type]
        try:
            with pytest.raises(RuntimeError, match=error) as failure:
                await client.connect()
            if error == "unknown_model":
                assert "yolo11n, people" in str(failure.value)
        finally:
            await client.close()
    assert len(app[REGISTRY]) == 0


async def _next_from(client: DetectionClient, model: str, timeout: float = 30.0) -> dict:
    """The next detection message produced by ``model`` (messages already in flight from the
    previous model are skipped: a switch applies from the next frame)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await client.next_message()
            if message["model"]["name"] == model:
                return message


async def test_a_session_starts_on_the_model_it_names_and_switches_live(
    aiohttp_server: ServerFactory, two_model_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    """A/B on one camera: the offer picks ``people``; config messages switch to the default
    and back. Messages name the model that made them, the ack carries its class names, and
    the detections and input size follow the model."""
    app = two_model_app()
    url = await serve(aiohttp_server, app)
    client = DetectionClient(url, ImageTrack(bus_frame, fps=15), model="people")
    try:
        await client.connect()
        first = await client.next_message()
        assert first["model"]["name"] == "people"  # from the very first frame
        assert {d["label"] for d in first["detections"]} <= set(SUBSET) and first["input_hw"] == [256, 320]
        (stream,) = list(app[REGISTRY])
        assert stream.settings.model == "people"

        client.send({"type": "config", "model": "yolo11n"})
        ack = await client.next_message("config")
        assert ack["model"] == "yolo11n" and len(ack["class_names"]) == 80
        a = await _next_from(client, "yolo11n")
        assert "bus" in {d["label"] for d in a["detections"]} and a["input_hw"] == [480, 640]

        client.send({"type": "config", "model": "people"})
        ack = await client.next_message("config")
        assert ack["model"] == "people" and ack["class_names"] == list(SUBSET)
        b = await _next_from(client, "people")
        assert "bus" not in {d["label"] for d in b["detections"]} and b["input_hw"] == [256, 320]

        client.send({"type": "config", "model": "yolo99"})
        error = await client.next_message("error")
        assert error["error"] == "bad_message" and "yolo11n, people" in error["detail"]
        assert (await client.next_message())["model"]["name"] == "people"  # unchanged, still serving

        client.send({"type": "config", "model": None})  # null: back to the default
        assert (await client.next_message("config"))["model"] == "yolo11n"
        await _next_from(client, "yolo11n")
    finally:
        await client.close()
    await wait_for(lambda: len(app[REGISTRY]) == 0)


async def test_metrics_list_every_model(
    aiohttp_client: Callable[..., object], two_model_app: Callable[..., web.Application],
    model_file: Path, subset_model: Path, catalog: ModelCatalog,
) -> None:
    client = await aiohttp_client(two_model_app())  # type: ignore[operator]
    text = await (await client.get("/metrics")).text()
    for name, path in (("yolo11n", model_file), ("people", subset_model)):
        info = catalog.info(name)
        assert (f'rtc_model_info{{backend="{info.backend}",name="{name}",precision="{info.precision}",'
                f'sha256="{sha256_of(path)[:12]}",version="8.3.250"}} 1.0') in text


async def test_the_same_file_under_two_names_at_two_sizes(
    aiohttp_server: ServerFactory, settings: Settings, model_file: Path
) -> None:
    specs = parse_specs(f"n640={model_file},n320={model_file}#imgsz=320&letterbox=square")
    catalog = load_models(Settings(models=specs))
    app = create_app(Settings(**{**settings.__dict__, "rate_limit": 0}), catalog)
    url = await serve(aiohttp_server, app)
    frame = cv2.imencode(".jpg", cv2.imread(str(FIXTURES / "bus.jpg")))[1].tobytes()
    async with aiohttp.ClientSession(headers={"Content-Type": "image/jpeg"}) as http:
        big = await (await http.post(f"{url}/predict?model=n640", data=frame)).json()
        small = await (await http.post(f"{url}/predict?model=n320", data=frame)).json()
        listed = await (await http.get(f"{url}/models")).json()
    assert big["input_hw"] == [640, 480] and small["input_hw"] == [320, 320]
    assert big["model"]["sha256"] == small["model"]["sha256"]
    assert [(m["name"], m["letterbox"]) for m in listed["models"]] == [("n640", "rect"), ("n320", "square")]


async def test_a_model_that_fails_its_warm_up_is_reported_and_fatal(
    aiohttp_server: ServerFactory, settings: Settings, model_file: Path, tmp_path: Path
) -> None:
    """In-process: ``/readyz`` stays 503 saying which model failed, and ``on_fatal`` is
    called (the process entry point stops the server with exit 1: tests/test_model_sources.py)."""
    broken = fails_at_run(tmp_path / "broken.onnx")
    catalog = load_models(Settings(models=parse_specs(f"yolo11n={model_file},broken={broken}")))
    reasons: list[str] = []
    app = create_app(settings, catalog, on_fatal=reasons.append)
    server = await aiohttp_server(app, host="127.0.0.1")
    await wait_for(lambda: bool(reasons), timeout=30)
    assert "model 'broken' failed its warm-up run" in reasons[0] and "Reshape" in reasons[0]
    async with aiohttp.ClientSession() as http:
        ready = await http.get(server.make_url("/readyz"))
        body = await ready.json()
        listed = await (await http.get(server.make_url("/models"))).json()
    assert ready.status == 503 and body["status"] == "failed" and "broken" in body["detail"]
    assert body["models"] == [{"name": "yolo11n", "ready": True}, {"name": "broken", "ready": False}]
    assert listed["models"][1]["ready"] is False and "Reshape" in listed["models"][1]["error"]
    assert not app[INFERENCE].ready
