"""The transport-free stream core: frames in, messages to every sink, one close path."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from rtc_server.app import build_registry
from rtc_server.config import Settings
from rtc_server.engine.catalog import ModelCatalog
from rtc_server.engine.scheduler import Scheduler
from rtc_server.streams.registry import ServerFull, StreamRegistry
from rtc_server.streams.stream import StreamLimits
from tests.helpers import ROOT, ListSink
from tests.stub_detector import StubDetector, boxes


class StuckSource:
    """A source whose transport never finishes closing (aiortc's close can hang)."""

    kind = "offer"

    def __init__(self) -> None:
        self.stop_called = asyncio.Event()

    async def stop(self) -> None:
        self.stop_called.set()
        await asyncio.Event().wait()


@pytest.fixture
async def registry(stub: StubDetector) -> AsyncIterator[StreamRegistry]:
    scheduler = Scheduler(ModelCatalog.of(stub))
    yield build_registry(Settings(model=Path("yolo11n.onnx"), max_sessions=2), scheduler)
    scheduler.close()


async def test_frames_reach_every_sink_and_close_reaches_them(registry: StreamRegistry, bus_frame: np.ndarray) -> None:
    stream = registry.open("offer")
    sinks = [ListSink(), ListSink()]
    for sink in sinks:
        stream.add_sink(sink)
    stream.start()
    stream.push(bus_frame, 9000)
    async with asyncio.timeout(20):
        while not all(s.messages for s in sinks):
            await asyncio.sleep(0.01)
    message = sinks[0].messages[0]
    assert message is sinks[1].messages[0] and message["pts"] == 9000
    assert boxes(message["detections"]) == [d.to_dict() for d in StubDetector().detections(640, 480)]
    await stream.close("closed by test")
    assert all(s.closed for s in sinks) and len(registry) == 0


async def test_a_crashed_task_closes_the_stream_and_frees_its_slot(registry: StreamRegistry) -> None:
    stream = registry.open("offer")
    registry.open("offer")
    with pytest.raises(ServerFull):
        registry.open("offer")

    async def crash() -> None:
        raise RuntimeError("boom")

    stream.spawn(crash(), "reader")
    async with asyncio.timeout(5):
        while len(registry) == 2:
            await asyncio.sleep(0.01)
    assert stream.close_reason == "internal_error"
    registry.open("offer")  # the slot is free again
    text = registry.metrics.render().decode()
    assert 'rtc_errors_total{kind="session_internal_error"} 1.0' in text
    assert 'rtc_sessions_closed_total{reason="internal_error"} 1.0' in text
    await registry.close_all()


async def test_a_source_that_never_stops_does_not_hold_the_close(registry: StreamRegistry) -> None:
    stream = registry.open("offer")
    stream.limits = StreamLimits(stop_timeout=0.2)
    source = StuckSource()
    stream.attach(source)
    async with asyncio.timeout(5):
        await stream.close("closed by test")
    assert source.stop_called.is_set() and len(registry) == 0
    assert 'rtc_errors_total{kind="session_close_timeout"} 1.0' in registry.metrics.render().decode()


@pytest.mark.parametrize("package", ["streams", "engine"])
def test_streams_and_engine_import_no_transport(package: str) -> None:
    """architecture.md's "Never" list: the engine and streams know no aiortc and no HTTP."""
    for path in (ROOT / "rtc_server" / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("aiortc", "aioice", "aiohttp", "signaling"), (path, name)
                assert "signaling" not in name.split("."), (path, name)
                if package == "engine":
                    assert "streams" not in name and "webrtc" not in name, (path, name)
