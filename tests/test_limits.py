"""Limits and access: session cap, rate limits, bearer auth, CORS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestClient

from drivers.client import DetectionClient, ImageTrack
from rtc_server.config import Settings
from rtc_server.signaling.context import REGISTRY

from .helpers import ClientFactory, ServerFactory, serve, wait_ready
from .sdp import make_offer

JPEG = {"Content-Type": "image/jpeg"}


async def new_client(aiohttp_client: ClientFactory, stub_app: Callable[..., web.Application],
                     **overrides: object) -> TestClient:
    c = await aiohttp_client(stub_app(**overrides))
    await wait_ready(c)
    return c


async def offer(c: TestClient, sdp: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return await c.post("/offer", json={"sdp": sdp, "type": "offer"}, headers=headers)


async def test_session_cap_is_503_with_retry_after_and_a_freed_slot_is_usable_at_once(
    aiohttp_client: ClientFactory, stub_app: Callable[..., web.Application]
) -> None:
    c = await new_client(aiohttp_client, stub_app, max_sessions=2, rate_limit=0)
    sdp = await make_offer()
    ids = []
    for _ in range(2):
        response = await offer(c, sdp)
        assert response.status == 200
        ids.append((await response.json())["session_id"])
    full = await offer(c, sdp)
    assert full.status == 503 and full.content_type == "application/json"
    assert (await full.json())["error"] == "server_full"
    assert int(full.headers["Retry-After"]) >= 1
    assert len(c.app[REGISTRY]) == 2
    session = c.app[REGISTRY].get(ids[0])
    assert session is not None
    await session.close()
    assert (await offer(c, sdp)).status == 200  # no delay, no retry loop
    metrics = await (await c.get("/metrics")).text()
    assert 'rtc_errors_total{kind="http_server_full"} 1.0' in metrics
    await c.app[REGISTRY].close_all()


async def test_rate_limit_per_client_and_route(aiohttp_client: ClientFactory,
                                               stub_app: Callable[..., web.Application]) -> None:
    # No refill within the test: /offer's and /predict's buckets each allow their burst only.
    c = await new_client(aiohttp_client, stub_app, rate_limit=0.01, rate_burst=2,
                         predict_rate_limit=0.01, predict_rate_burst=3)
    statuses = [(await c.post("/predict", data=b"junk", headers=JPEG)).status for _ in range(3)]
    assert statuses == [400, 400, 400]  # within the burst: answered on their merits
    limited = await c.post("/predict", data=b"junk", headers=JPEG)
    assert limited.status == 429 and (await limited.json())["error"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    # Other routes are not charged: /offer has its own bucket, probes have none.
    bad_offer = {"data": "x", "headers": {"Content-Type": "application/json"}}
    assert [(await c.post("/offer", **bad_offer)).status for _ in range(3)] == [400, 400, 429]
    assert [(await c.get("/healthz")).status for _ in range(10)] == [200] * 10


async def test_default_predict_limit_serves_a_camera_posting_30_fps(
    aiohttp_client: ClientFactory, stub_app: Callable[..., web.Application]
) -> None:
    """The seed's own client POSTs camera frames at 10-30 fps: three seconds of that at the
    default limits is never refused (the old shared 5/s, burst 20, refused from frame 21)."""
    defaults = Settings()
    c = await new_client(aiohttp_client, stub_app, predict_rate_limit=defaults.predict_rate_limit,
                         predict_rate_burst=defaults.predict_rate_burst, rate_limit=defaults.rate_limit,
                         rate_burst=defaults.rate_burst)
    loop = asyncio.get_running_loop()
    start, statuses = loop.time(), []
    for frame in range(90):  # 30 fps for 3 s, paced like a camera (never faster)
        await asyncio.sleep(max(0.0, start + frame / 30 - loop.time()))
        statuses.append((await c.post("/predict", data=b"junk", headers=JPEG)).status)
    assert statuses == [400] * 90, statuses  # judged on their merits (junk), never 429


async def test_auth_token_guards_offer_and_predict(aiohttp_client: ClientFactory,
                                                   stub_app: Callable[..., web.Application]) -> None:
    c = await new_client(aiohttp_client, stub_app, auth_token=("alpha-token", "beta-token"), rate_limit=0)
    sdp = await make_offer()
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YWxwaGE="},
                    {"Authorization": "Bearer "}, {"Authorization": "Bearer alpha-token-and-more"}):
        response = await offer(c, sdp, headers)
        assert response.status == 401, headers
        assert (await response.json())["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        predict = await c.post("/predict", data=b"junk", headers={**JPEG, **(headers or {})})
        assert predict.status == 401
    assert len(c.app[REGISTRY]) == 0  # no session was created by any of them
    ok = await offer(c, sdp, {"Authorization": "Bearer beta-token"})
    assert ok.status == 200 and len(c.app[REGISTRY]) == 1
    lower_scheme = {**JPEG, "Authorization": "bearer alpha-token"}
    assert (await c.post("/predict", data=b"junk", headers=lower_scheme)).status == 400
    for probe in ("/healthz", "/readyz", "/metrics"):  # open for probes and scrapers by default
        assert (await c.get(probe)).status == 200, probe
    await c.app[REGISTRY].close_all()


async def test_metrics_auth_is_opt_in(aiohttp_client: ClientFactory, stub_app: Callable[..., web.Application]) -> None:
    c = await new_client(aiohttp_client, stub_app, auth_token=("s3cret",), metrics_auth=True)
    assert (await c.get("/metrics")).status == 401
    assert (await c.get("/metrics", headers={"Authorization": "Bearer s3cret"})).status == 200
    assert (await c.get("/healthz")).status == 200 and (await c.get("/readyz")).status == 200


async def test_authenticated_client_streams(aiohttp_server: ServerFactory,
                                            stub_app: Callable[..., web.Application], bus_frame: np.ndarray) -> None:
    url = await serve(aiohttp_server, stub_app(auth_token=("tok",)))
    async with DetectionClient(url, ImageTrack(bus_frame, fps=15), token="tok") as client:
        assert (await client.next_message())["type"] == "detections"


async def test_cors_default_is_same_origin_only(aiohttp_client: ClientFactory,
                                                stub_app: Callable[..., web.Application]) -> None:
    c = await new_client(aiohttp_client, stub_app, rate_limit=0)
    evil = {"Origin": "http://evil.example"}
    preflight = await c.options("/offer", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert preflight.status == 403 and (await preflight.json())["error"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in preflight.headers
    post = await c.post("/predict", data=b"junk", headers={**JPEG, **evil})
    assert post.status == 403
    same = {"Origin": f"http://{c.host}:{c.port}"}
    assert (await c.post("/predict", data=b"junk", headers={**JPEG, **same})).status == 400  # judged on merit
    assert (await c.post("/predict", data=b"junk", headers=JPEG)).status == 400  # no Origin: not a browser


async def test_cors_listed_origin_gets_preflight_and_headers(aiohttp_client: ClientFactory,
                                                             stub_app: Callable[..., web.Application]) -> None:
    c = await new_client(aiohttp_client, stub_app, rate_limit=0, cors_origins=("https://app.example",))
    origin = {"Origin": "https://app.example"}
    preflight = await c.options("/predict", headers={**origin, "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    error = await c.post("/predict", data=b"junk", headers={**JPEG, **origin})
    assert error.status == 400 and error.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert (await c.post("/predict", data=b"junk", headers={**JPEG, "Origin": "https://other.example"})).status == 403
