"""Bad input on the REST surface: every case is a JSON 4xx, and the server stays healthy."""

from __future__ import annotations

import asyncio
import io
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from rtc_server.signaling.context import REGISTRY

from .helpers import FIXTURES, ClientFactory, wait_ready
from .sdp import make_offer, only_unsupported_video_codecs

JSON = {"Content-Type": "application/json"}
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
async def client(aiohttp_client: ClientFactory, stub_app: Callable[..., web.Application]) -> TestClient:
    c = await aiohttp_client(stub_app(rate_limit=0, predict_rate_limit=0))
    await wait_ready(c)
    return c


async def assert_json_error(response, status: int, error: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if error is not None:
        assert body["error"] == error, body
    return body


async def assert_unharmed(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    assert len(client.app[REGISTRY]) == 0


def drop_lines(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


# ----- /offer -----------------------------------------------------------------------------
async def test_offer_wrong_content_type_is_415(client: TestClient) -> None:
    sdp = await make_offer()
    response = await client.post("/offer", data=json.dumps({"sdp": sdp, "type": "offer"}),
                                 headers={"Content-Type": "text/plain"})
    await assert_json_error(response, 415, "unsupported_media_type")
    await assert_unharmed(client)


@pytest.mark.parametrize("case", ["audio_only", "no_media", "two_video", "unsupported_codec", "not_sdp",
                                  "extra_field", "missing_sdp", "type_answer", "sdp_not_string", "deep_json",
                                  "no_fingerprint", "no_ice_credentials", "bundle_unknown_mid"])
async def test_offer_bad_content_is_400(client: TestClient, case: str) -> None:
    good = await make_offer()
    bodies: dict[str, object] = {
        "audio_only": {"sdp": await make_offer(video=0, audio=1), "type": "offer"},
        "no_media": {"sdp": await make_offer(video=0), "type": "offer"},
        "two_video": {"sdp": await make_offer(video=2), "type": "offer"},
        "unsupported_codec": {"sdp": only_unsupported_video_codecs(good), "type": "offer"},
        "not_sdp": {"sdp": "v=0\r\nthis is not a session description\r\nm=video\r\n", "type": "offer"},
        "extra_field": {"sdp": good, "type": "offer", "admin": True},
        "missing_sdp": {"type": "offer"},
        "type_answer": {"sdp": good, "type": "answer"},
        "sdp_not_string": {"sdp": ["v=0"], "type": "offer"},
        # Found by the fuzz tests: offers aiortc's parser accepts but then fails on (500 before).
        "no_fingerprint": {"sdp": drop_lines(good, "a=fingerprint:"), "type": "offer"},
        "no_ice_credentials": {"sdp": drop_lines(good, "a=ice-pwd:"), "type": "offer"},
        "bundle_unknown_mid": {"sdp": good.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 7 0 1"), "type": "offer"},
    }
    data = "[" * 30_000 + "]" * 30_000 if case == "deep_json" else json.dumps(bodies[case])
    body = await assert_json_error(await client.post("/offer", data=data, headers=JSON), 400)
    assert body["error"] in ("bad_offer", "bad_json")
    if case in ("audio_only", "no_media"):
        assert "no video" in body["detail"]
    if case == "two_video":
        assert "2 video tracks" in body["detail"]
    if case == "unsupported_codec":
        assert "no supported video codec" in body["detail"]
    await assert_unharmed(client)


async def test_offer_huge_body_is_413_json(client: TestClient) -> None:
    sdp = await make_offer()
    huge = json.dumps({"sdp": sdp + "a=x-padding:" + "x" * 200_000 + "\r\n", "type": "offer"})
    await assert_json_error(await client.post("/offer", data=huge, headers=JSON), 413)

    async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: chunked upload
        for _ in range(100):
            yield b"x" * 10_000

    await assert_json_error(await client.post("/offer", data=chunks(), headers=JSON), 413)
    await assert_unharmed(client)


async def test_second_offer_for_a_live_session_is_409(client: TestClient) -> None:
    sdp = await make_offer()
    first = await client.post("/offer", json={"sdp": sdp, "type": "offer"})
    assert first.status == 200
    session_id = (await first.json())["session_id"]
    again = await client.post("/offer", json={"sdp": sdp, "type": "offer", "session_id": session_id})
    await assert_json_error(again, 409, "session_exists")
    assert len(client.app[REGISTRY]) == 1  # the live session is untouched
    await client.app[REGISTRY].close_all()
    gone = await client.post("/offer", json={"sdp": sdp, "type": "offer", "session_id": session_id})
    await assert_json_error(gone, 404, "unknown_session")


# ----- /predict ---------------------------------------------------------------------------
def _jpeg(width: int, height: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((height, width, 3), 127, np.uint8))
    assert ok
    return data.tobytes()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` but carries one tiny compressed row:
    a decompression bomb's shape (cheap to send, huge once decoded)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _big_jpeg_bomb() -> bytes:
    """A genuine 20000 x 20000 JPEG (a few hundred KB; 1.2 GB decoded), made with Pillow."""
    buffer = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buffer, "JPEG", quality=1)
    return buffer.getvalue()


@pytest.mark.parametrize("case,content_type,status,error", [
    ("text", "image/jpeg", 400, "bad_image"),
    ("zero", "image/jpeg", 400, "bad_image"),
    ("truncated", "image/jpeg", 400, "bad_image"),
    ("corrupt", "image/jpeg", 400, "bad_image"),
    ("gif", "image/png", 400, "bad_image"),
    ("one_pixel", "image/jpeg", 400, "image_too_small"),
    ("png_bomb", "image/png", 413, "image_too_large"),
    ("jpeg_bomb", "image/jpeg", 413, "image_too_large"),
    ("valid_jpeg", "application/octet-stream", 415, "unsupported_media_type"),
    ("valid_jpeg", "text/plain", 415, "unsupported_media_type"),
])
async def test_predict_bad_images(client: TestClient, case: str, content_type: str, status: int,
                                  error: str) -> None:
    bus = (FIXTURES / "bus.jpg").read_bytes()
    corrupt = bytearray(bus)
    corrupt[2:600] = bytes(598)  # SOI marker intact, the segments after it wiped
    gif = io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, "GIF")
    bodies = {
        "text": b"hello, this is not an image", "zero": b"", "truncated": bus[:2000], "corrupt": bytes(corrupt),
        "gif": gif.getvalue(), "one_pixel": _jpeg(1, 1), "png_bomb": _png_header_only(20000, 20000),
        "jpeg_bomb": _big_jpeg_bomb() if case == "jpeg_bomb" else b"", "valid_jpeg": bus,
    }
    response = await client.post("/predict", data=bodies[case], headers={"Content-Type": content_type})
    await assert_json_error(response, status, error)
    await assert_unharmed(client)


async def test_predict_odd_size_image_works(client: TestClient) -> None:
    response = await client.post("/predict", data=_jpeg(641, 479), headers={"Content-Type": "image/jpeg"})
    assert response.status == 200
    assert (await response.json())["width"] == 641


async def test_predict_body_over_the_cap_is_413_json(aiohttp_client: ClientFactory,
                                                       stub_app: Callable[..., web.Application]) -> None:
    c = await aiohttp_client(stub_app(max_body_bytes=50_000, rate_limit=0, predict_rate_limit=0))
    await wait_ready(c)
    response = await c.post("/predict", data=(FIXTURES / "bus.jpg").read_bytes(),
                            headers={"Content-Type": "image/jpeg"})
    await assert_json_error(response, 413, "request_entity_too_large")


# ----- static files and framework errors --------------------------------------------------
@pytest.mark.parametrize("path", [
    "/static/../README.md", "/static/%2e%2e/README.md", "/static/%2E%2E/%2E%2E/etc/passwd",
    "/static/..%2fREADME.md", "/static/%2e%2e%2fREADME.md", "/static/....//README.md", "/static/",
    "/static/nope.js", "/static//etc/passwd",
])
async def test_static_traversal_never_leaves_static(client: TestClient, path: str) -> None:
    # A raw socket: any HTTP client library would normalise "..", which must reach the server as is.
    secret = README.read_text()[:200]
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode("latin-1")
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 500, (path, head)
    assert "content-type: application/json" in head.lower()
    assert secret not in body and "root:" not in body
    assert set(json.loads(body)) == {"error", "detail"}


async def test_framework_405_and_404_are_json_with_allow(client: TestClient) -> None:
    response = await client.put("/predict")
    await assert_json_error(response, 405)
    assert "POST" in response.headers["Allow"]
    await assert_json_error(await client.get("/no/such/thing"), 404, "not_found")


async def test_many_bad_requests_leave_a_session_working(client: TestClient) -> None:
    """Bad requests in parallel with a good one: the good one is answered normally."""
    bad = [client.post("/predict", data=b"junk", headers={"Content-Type": "image/jpeg"}) for _ in range(20)]
    good = client.post("/predict", data=(FIXTURES / "bus.jpg").read_bytes(), headers={"Content-Type": "image/jpeg"})
    *bad_responses, good_response = await asyncio.gather(*bad, good)
    assert all(r.status == 400 for r in bad_responses)
    assert good_response.status == 200
