"""Observability: errors by kind in /metrics, JSON logs with a session id on every
session line, and no per-frame log lines at INFO."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from drivers.client import DetectionClient, ImageTrack
from rtc_server.logs import JsonFormatter, SessionFilter, TextFormatter

from .helpers import ClientFactory, ServerFactory, serve, wait_for, wait_ready


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything logged at INFO and above, as the JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SessionFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_http_errors_are_counted_by_kind(aiohttp_client: ClientFactory,
                                               stub_app: Callable[..., web.Application]) -> None:
    c: TestClient = await aiohttp_client(stub_app(rate_limit=0, predict_rate_limit=0))
    await wait_ready(c)
    for _ in range(3):
        await c.post("/predict", data=b"junk", headers={"Content-Type": "image/jpeg"})
    await c.post("/predict", data=b"junk", headers={"Content-Type": "text/plain"})
    await c.get("/nowhere")
    text = await (await c.get("/metrics")).text()
    assert 'rtc_errors_total{kind="http_bad_image"} 3.0' in text
    assert 'rtc_errors_total{kind="http_unsupported_media_type"} 1.0' in text
    assert 'rtc_errors_total{kind="http_not_found"} 1.0' in text


async def test_session_log_lines_carry_the_session_id_and_frames_are_not_logged(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray,
    json_log: io.StringIO,
) -> None:
    app = stub_app()
    url = await serve(aiohttp_server, app)
    async with DetectionClient(url, ImageTrack(bus_frame, fps=30)) as client:
        await client.next_message()
        early = len(entries(json_log))
        for _ in range(30):  # ~1 s of frames: per-frame logging would add dozens of lines
            await client.next_message()
        late = len(entries(json_log))
        client.send({"type": "config", "conf": 3})
        await client.next_message("error")
    await wait_for(lambda: any("closed:" in str(e["message"]) for e in entries(json_log)))
    lines = entries(json_log)
    assert late == early, lines[early:late]  # nothing logged per frame at INFO
    session_lines = [e for e in lines if e["logger"] in ("rtc_server.streams.stream", "rtc_server.webrtc.peer")]
    messages = [str(e["message"]) for e in session_lines]
    assert any(m.startswith("answered") for m in messages) and any(m.startswith("closed:") for m in messages)
    assert any(m.startswith("bad control message") for m in messages)
    assert {e.get("session_id") for e in session_lines} == {client.session_id}, session_lines
    assert all(e["severity"] in ("INFO", "WARNING", "ERROR") and "time" in e for e in lines)


def test_formatters_cloud_logging_fields_and_text_suffix() -> None:
    record = logging.LogRecord("rtc_server.x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    record.session_id = "abc123"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["severity"] == "WARNING" and entry["message"] == "hello world" and entry["session_id"] == "abc123"
    assert TextFormatter().format(record).endswith("hello world [session abc123]")
    plain = logging.LogRecord("rtc_server.x", logging.INFO, __file__, 1, "no session", (), None)
    SessionFilter().filter(plain)
    assert "session_id" not in json.loads(JsonFormatter().format(plain))
