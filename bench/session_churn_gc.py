"""The event-loop stall of the garbage collection after session churn (issue 20).

When streams close, ``StreamRegistry`` runs a full ``gc.collect()`` on the event loop (at
most once a second) to free aiortc's decoder threads held in reference cycles. A full
pass walks every tracked object of the process. This bench serves the real app in
process, connects ``--sessions`` real aiortc peers (each sending a 640x480 image at
``--fps``), waits for a detection on each, closes them all at once, and measures, for the
next seconds: the longest gap between ticks of a 5 ms loop timer (the loop's stall) and
how long each of the registry's collections took.

Two modes, same process, same run: ``frozen`` (the server as shipped: it calls
``gc.freeze()`` at start-up, so a pass walks only what was made since) and ``unfrozen``
(``gc.unfreeze()`` right after start-up: the code before the fix).

    python -m bench.session_churn_gc [--sessions 8] [--rounds 3] [--fps 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from aiohttp import web

from bench.common import bus_rgb, emit, find_model, free_port, load, table
from drivers.client import DetectionClient, ImageTrack
from rtc_server.app import create_app
from rtc_server.config import Settings
from rtc_server.signaling.context import INFERENCE, REGISTRY
from rtc_server.streams import registry as registry_module


class _TimedGc:
    """Stands in for the ``gc`` module inside ``streams.registry``: times each collection."""

    def __init__(self) -> None:
        self.passes_ms: list[float] = []

    def collect(self, generation: int = 2) -> int:
        started = time.perf_counter()
        freed = gc.collect(generation)
        self.passes_ms.append((time.perf_counter() - started) * 1e3)
        return freed

    def __getattr__(self, name: str) -> Any:
        return getattr(gc, name)


async def _churn(url: str, app: web.Application, sessions: int, fps: float) -> float:
    """Connect ``sessions`` peers, close them all; the longest loop gap (ms) in the 3 s after."""
    image = bus_rgb()
    clients = [DetectionClient(url, ImageTrack(image, fps=fps)) for _ in range(sessions)]
    await asyncio.gather(*(c.connect() for c in clients))
    await asyncio.gather(*(c.next_message() for c in clients))
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last - 0.005)
            last = now

    ticking = asyncio.ensure_future(ticker())
    await asyncio.gather(*(c.close() for c in clients))
    await app[REGISTRY].close_all()
    await asyncio.sleep(3.0)  # the registry's collection comes 1 s after the last close
    ticking.cancel()
    await asyncio.gather(ticking, return_exceptions=True)
    return max(gaps) * 1e3


async def _mode(model: Any, frozen: bool, sessions: int, rounds: int, fps: float) -> dict[str, Any]:
    settings = Settings(model=model, ice_addresses=("127.0.0.1",), ice_allow_networks=("127.0.0.0/8",),
                        rate_limit=0, max_sessions=max(16, sessions), log_level="WARNING")
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()  # start-up: the server freezes what lives now
    if not frozen:
        gc.unfreeze()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    while not app[INFERENCE].ready:  # warm-up
        await asyncio.sleep(0.05)
    timed = _TimedGc()
    registry_module.gc = timed  # type: ignore[assignment]
    try:
        stalls = [await _churn(f"http://127.0.0.1:{port}", app, sessions, fps) for _ in range(rounds)]
    finally:
        registry_module.gc = gc
        frozen_count = gc.get_freeze_count()
        await runner.cleanup()
        gc.unfreeze()
    return {"frozen_objects": frozen_count, "loop_stall_ms": stalls, "gc_pass_ms": timed.passes_ms,
            "max_stall_ms": max(stalls), "gc_pass_median_ms": statistics.median(timed.passes_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    model = find_model(args.model)
    load_start = load()
    results = {}
    for name, frozen in (("unfrozen (before)", False), ("frozen (after)", True)):
        results[name] = asyncio.run(_mode(model, frozen, args.sessions, args.rounds, args.fps))
    print(table(["mode", "objects frozen", "gc pass ms (median)", "loop stall ms (max of rounds)"],
                [[name, r["frozen_objects"], round(r["gc_pass_median_ms"], 1), round(r["max_stall_ms"], 1)]
                 for name, r in results.items()]))
    emit("session_churn_gc", {"sessions": args.sessions, "rounds": args.rounds, **results}, load_start)


if __name__ == "__main__":
    main()
