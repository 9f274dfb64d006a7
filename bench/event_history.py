"""The event history's writes (issue 22): what keeping every stream's events in the store
costs — transactions and rows per minute, a batch's write time, what ``publish`` costs a
stream, and how late the event loop runs while the writer writes.

One process, the real ``Store`` (SQLite in a temporary folder; ``--postgres``: a PostgreSQL
started in a temporary folder as ``tests/postgres.py`` does) and the real ``EventHistory``
writer with the server's defaults; ``--streams`` streams each make ``--rate`` events a second
for ``--seconds`` seconds, published from the event loop as ``Stream.deliver`` does. A 5 ms
ticker on the same loop records how late it wakes (the loop's lag; ``--rate 0``: its lag with
nothing written, the machine's own). ``--per-event`` writes each event in its own
transaction instead (batches of one, no wait): what batching avoids.

    python -m bench.event_history [--streams 10] [--rate 2] [--seconds 20] [--postgres] [--per-event]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import emit, load, summary, table
from rtc_server.outputs import EventHistory, HistoryConfig, HistoryEvent
from rtc_server.store import StoreConfig, open_store

TICK_S = 0.005


async def run(url: str, streams: int, rate: float, seconds: float, per_event: bool) -> dict[str, Any]:
    store = await open_store(StoreConfig(url))
    batch_ms: list[float] = []
    rows: list[int] = []

    async def write(batch: Sequence[HistoryEvent]) -> None:
        started = time.perf_counter()
        await store.add_events(batch)
        batch_ms.append((time.perf_counter() - started) * 1000)
        rows.append(len(batch))

    config = HistoryConfig(batch=1, interval_s=0.0) if per_event else HistoryConfig()
    history = EventHistory(write, config)
    await history.start()
    lags: list[float] = []
    publish_us: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            lags.append((time.perf_counter() - started - TICK_S) * 1000)

    tick = asyncio.create_task(ticker())
    total = streams * rate
    n = round(total * seconds)
    started = time.perf_counter()
    for i in range(n if total > 0 else 0):
        due = started + i / total
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        message = {"type": "event", "event": "line_cross", "line": "door", "direction": "left",
                   "track_id": i, "label": "person", "class_id": 0, "frame_id": i, "pts": i * 3000,
                   "time": time.time()}
        t0 = time.perf_counter()
        history.publish(f"stream-{i % streams}", message)
        publish_us.append((time.perf_counter() - t0) * 1e6)
    await asyncio.sleep(max(0.0, started + seconds - time.perf_counter()))  # --rate 0: the loop's own lag
    elapsed = time.perf_counter() - started
    queued_at_end = history.queued  # behind: what was still waiting when the events stopped
    await history.close()
    stop.set()
    await tick
    stored = await store.count("events")
    await store.close()
    minutes = elapsed / 60
    return {
        "published": n, "stored": stored, "dropped": history.dropped, "queued_at_end": queued_at_end,
        "transactions": len(rows), "transactions_per_min": len(rows) / minutes,
        "transactions_per_stream_per_min": len(rows) / minutes / max(streams, 1),
        "rows_per_stream_per_min": stored / minutes / max(streams, 1),
        "rows_per_transaction": summary([float(r) for r in rows]),
        "batch_ms": summary(batch_ms), "publish_us": summary(publish_us), "loop_lag_ms": summary(lags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--rate", type=float, default=2.0, help="events a second per stream")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--per-event", action="store_true", help="one transaction per event (no batching)")
    args = parser.parse_args()
    load_start = load()
    server = None
    with tempfile.TemporaryDirectory(prefix="rtc-history-") as tmp:
        if args.postgres:
            from tests.postgres import Postgres

            server = Postgres()
            url = server.create_database()
        else:
            url = StoreConfig.for_data_dir(Path(tmp) / "data").url
        try:
            result = asyncio.run(run(url, args.streams, args.rate, args.seconds, args.per_event))
        finally:
            if server is not None:
                server.close()
    database = "postgresql" if args.postgres else "sqlite"
    mode = "per event" if args.per_event else "batched"
    print(table(
        ["database", "mode", "events/s", "stored", "dropped", "queued at end", "tx/min", "tx/stream/min",
         "rows/stream/min", "rows/tx p50", "batch ms p50", "batch ms p95", "publish µs p50", "loop lag ms p50",
         "loop lag ms p99", "loop lag ms max"],
        [[database, mode, args.streams * args.rate, result["stored"], result["dropped"], result["queued_at_end"],
          result["transactions_per_min"], result["transactions_per_stream_per_min"],
          result["rows_per_stream_per_min"], result["rows_per_transaction"]["p50"], result["batch_ms"]["p50"],
          result["batch_ms"]["p95"], result["publish_us"]["p50"], result["loop_lag_ms"]["p50"],
          result["loop_lag_ms"]["p99"], result["loop_lag_ms"]["max"]]]))
    emit("event_history", {"database": database, "mode": mode, "streams": args.streams, "rate": args.rate,
                           "seconds": args.seconds, **result}, load_start)


if __name__ == "__main__":
    main()
