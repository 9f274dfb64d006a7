"""The REST surface through aiohttp's test client: /predict, probes, errors as JSON."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from .helpers import FIXTURES, ClientFactory, wait_ready
from .stub_detector import StubDetector


@pytest.fixture
async def client(aiohttp_client: ClientFactory, make_app: Callable[..., web.Application]) -> TestClient:
    """The app on the real model: /predict's end-to-end tests."""
    c = await aiohttp_client(make_app())
    await wait_ready(c)
    return c


@pytest.fixture
async def stub_client(aiohttp_client: ClientFactory, stub_app: Callable[..., web.Application]) -> TestClient:
    """The app on the stub detector: errors, probes, the page."""
    c = await aiohttp_client(stub_app())
    await wait_ready(c)
    return c


async def test_predict_finds_the_bus_and_people(client: TestClient) -> None:
    body = (FIXTURES / "bus.jpg").read_bytes()
    response = await client.post("/predict", data=body, headers={"Content-Type": "image/jpeg"})
    assert response.status == 200
    message = await response.json()
    assert message["type"] == "detections"
    assert (message["width"], message["height"]) == (810, 1080)
    labels = [d["label"] for d in message["detections"]]
    assert labels[0] == "bus" and labels.count("person") >= 3
    bus = message["detections"][0]
    x1, y1, x2, y2 = bus["box"]
    assert 0 <= x1 < x2 <= 810 and 0 <= y1 < y2 <= 1080 and bus["score"] > 0.8
    timing = message["timing"]
    assert timing["inference_ms"] > 0 and timing["server_ms"] >= timing["inference_ms"]
    assert message["model"]["name"] == "yolo11n"


async def test_predict_accepts_png(client: TestClient, bus_rgb) -> None:  # type: ignore[no-untyped-def]
    import cv2

    _, png = cv2.imencode(".png", cv2.cvtColor(bus_rgb, cv2.COLOR_RGB2BGR))
    response = await client.post("/predict", data=png.tobytes(), headers={"Content-Type": "image/png"})
    assert response.status == 200
    assert "bus" in [d["label"] for d in (await response.json())["detections"]]


@pytest.mark.parametrize("body,content_type,status,error", [
    (b"hello", "image/jpeg", 400, "bad_image"),
    (b"", "image/jpeg", 400, "bad_image"),
    ((FIXTURES / "bus.jpg").read_bytes()[:2000], "image/jpeg", 400, "bad_image"),
    ((FIXTURES / "bus.jpg").read_bytes(), "text/plain", 415, "unsupported_media_type"),
])
async def test_predict_bad_input_is_a_json_4xx(stub_client: TestClient, body: bytes, content_type: str,
                                               status: int, error: str) -> None:
    response = await stub_client.post("/predict", data=body, headers={"Content-Type": content_type})
    assert response.status == status
    assert response.content_type == "application/json"
    assert (await response.json())["error"] == error
    assert (await stub_client.get("/healthz")).status == 200


@pytest.mark.parametrize("payload,error", [
    ("not json", "bad_json"),
    ("[1, 2]", "bad_offer"),
    ('{"type": "answer", "sdp": "v=0"}', "bad_offer"),
    ('{"type": "offer", "sdp": "hello"}', "bad_offer"),
    ('{"type": "offer"}', "bad_offer"),
])
async def test_offer_bad_input_is_a_json_400(stub_client: TestClient, payload: str, error: str) -> None:
    response = await stub_client.post("/offer", data=payload, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["error"] == error


async def test_framework_errors_are_json(stub_client: TestClient) -> None:
    for response, status in ((await stub_client.get("/nowhere"), 404), (await stub_client.get("/offer"), 405)):
        assert response.status == status
        assert response.content_type == "application/json"
        assert set(await response.json()) == {"error", "detail"}


async def test_probes_and_page(stub_client: TestClient) -> None:
    assert (await stub_client.get("/healthz")).status == 200
    ready = await (await stub_client.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["model"]["name"] == "yolo11n"
    page = await stub_client.get("/")
    assert page.status == 200 and "<button" in await page.text()
    assert (await stub_client.get("/static/app.js")).status == 200


async def test_readyz_is_503_until_warm(aiohttp_client: ClientFactory, stub_app: Callable[..., web.Application],
                                        stub: StubDetector) -> None:
    import threading

    release = threading.Event()

    class SlowWarmup:
        info = stub.info

        def detect(self, images, thresholds):  # type: ignore[no-untyped-def]
            return stub.detect(images, thresholds)

        def warmup(self) -> None:
            release.wait(10)

    c = await aiohttp_client(stub_app(detector_override=SlowWarmup()))
    assert (await c.get("/readyz")).status == 503
    assert (await c.get("/healthz")).status == 200
    release.set()
    await wait_ready(c)


async def test_ice_servers_are_served_to_the_page(aiohttp_client: ClientFactory,
                                                 stub_app: Callable[..., web.Application]) -> None:
    turn = {"urls": "turn:turn.example.com:443?transport=tcp", "username": "u", "credential": "p"}
    stun = {"urls": "stun:stun.example.com:3478"}
    c = await aiohttp_client(stub_app(ice_servers=(stun, turn)))
    # Issue 20: a static TURN password never goes to an anonymous caller (tests/test_rights.py).
    assert await (await c.get("/ice-servers")).json() == {"ice_servers": [stun]}
    c1 = await aiohttp_client(stub_app(ice_servers=(stun, turn), auth_token=("t",)))
    assert await (await c1.get("/ice-servers", headers={"Authorization": "Bearer t"})).json() == \
        {"ice_servers": [stun, turn]}
    c2 = await aiohttp_client(stub_app())
    assert await (await c2.get("/ice-servers")).json() == {"ice_servers": []}
