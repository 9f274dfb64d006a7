"""Replicas (issue 22): failover time, the latency a forwarded SSE message adds, database writes
per stream per minute.

Three ``python -m rtc_server`` replicas on one real PostgreSQL (Debian's, started here in a
temporary folder as ``tests/postgres.py`` does), each with ``RTC_INTERNAL_URL``; pull streams of
a looping H.264 MP4 (bus.jpg, a keyframe every second) from a local HTTP server.

- **Failover**: ``kill -9`` of a stream's owner → the first detection of that stream on another
  replica (its SSE). Bounded by ``RTC_LEASE_SECONDS`` + a renew interval (a third of it) + the
  source's next keyframe + opening the source. The killed replica is started again between runs.
- **Forwarded SSE**: the same stream's SSE read at once from its owner and through another
  replica; per detection message (matched by ``frame_id``) the arrival time through the
  forward minus the direct one.
- **Writes**: PostgreSQL's own counters (``pg_stat_database``: rows inserted + updated + deleted,
  and committed transactions) over a steady-state window, per stream per minute.

    python -m bench.replicas [--streams 3] [--lease 5] [--runs 3] [--window 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import Server, emit, find_model, free_port, load, start_server, stop_server, summary, table
from bench.common import wait_ready as wait_server_ready
from tests.postgres import Postgres
from tests.pull_media import make_clip, media_server

SECRET = "bench-internal-secret-0123456789"
INTERNAL = {"X-RTC-Internal": SECRET}


def start_replica(model: Path, database: str, lease: float) -> Server:
    port = free_port()
    env = {"RTC_DATABASE_URL": database, "RTC_LEASE_SECONDS": str(lease), "RTC_INTERNAL_SECRET": SECRET,
           "RTC_SOURCE_ALLOW_NETWORKS": "127.0.0.0/8", "RTC_MAX_FPS": "5", "RTC_THREADS": "1", "RTC_WORKERS": "1"}
    server = start_server(model, env=env, extra_args=["--port", str(port), "--internal-url",
                                                      f"http://127.0.0.1:{port}", "--log-level", "INFO"])
    server.port = port
    return server


async def own_streams(http: aiohttp.ClientSession, server: Server) -> list[str]:
    try:
        async with http.get(f"{server.url}/streams", headers=INTERNAL) as response:
            return [s["id"] for s in (await response.json())["streams"]] if response.status == 200 else []
    except aiohttp.ClientError:
        return []


async def detections(http: aiohttp.ClientSession, url: str, stream_id: str) -> Any:
    """(arrival time, message) for each detection message of the stream's SSE."""
    async with http.get(f"{url}/sessions/{stream_id}/events") as response:
        assert response.status == 200, await response.text()
        async for raw in response.content:
            if raw.startswith(b"data: "):
                message = json.loads(raw[6:])
                if message.get("type") == "detections":
                    yield time.perf_counter(), message


async def first_detection(http: aiohttp.ClientSession, url: str, stream_id: str) -> float:
    async for arrived, _ in detections(http, url, stream_id):
        return arrived
    raise RuntimeError("no detection")


async def forwarded_latency(http: aiohttp.ClientSession, owner: Server, other: Server, stream_id: str,
                            messages: int) -> list[float]:
    direct: dict[int, float] = {}
    through: dict[int, float] = {}

    async def read(url: str, into: dict[int, float]) -> None:
        async for arrived, message in detections(http, url, stream_id):
            into[message["frame_id"]] = arrived
            if len(into) >= messages + 5:
                return
    await asyncio.wait_for(asyncio.gather(read(owner.url, direct), read(other.url, through)), timeout=120)
    common = sorted(set(direct) & set(through))[2:]  # the first ones may predate one subscription
    return [(through[f] - direct[f]) * 1000 for f in common]


def pg_counters(postgres: Postgres, database: str) -> tuple[int, int]:
    import psycopg

    name = database.rsplit("/", 1)[1]
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        row = conn.execute("SELECT tup_inserted + tup_updated + tup_deleted, xact_commit FROM pg_stat_database "
                           "WHERE datname = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def run(streams: int, lease: float, runs: int, window: float, messages: int) -> dict[str, Any]:
    model = find_model()
    postgres = Postgres()
    folder = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    make_clip(folder / "bus.mp4", "mp4", seconds=2.0)
    files = media_server(folder)
    await files.start()
    database = postgres.create_database()
    replicas = [start_replica(model, database, lease) for _ in range(3)]
    result: dict[str, Any] = {"streams": streams, "lease_seconds": lease}
    try:
        for server in replicas:
            wait_server_ready(server, timeout=180)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=3)) as http:
            ids = []
            for _ in range(streams):
                body = {"url": f"http://127.0.0.1:{files.port}/bus.mp4", "loop": True}
                async with http.post(f"{replicas[0].url}/streams", json=body) as response:
                    assert response.status == 201, await response.text()
                    ids.append((await response.json())["id"])
            await asyncio.sleep(lease)  # settle: the streams spread

            # Writes, steady state.
            before, before_tx = pg_counters(postgres, database)
            await asyncio.sleep(window)
            after, after_tx = pg_counters(postgres, database)
            minutes = window / 60
            result["rows_written_per_stream_per_minute"] = (after - before) / minutes / streams
            result["transactions_per_stream_per_minute"] = (after_tx - before_tx) / minutes / streams
            print(f"writes: {result['rows_written_per_stream_per_minute']:.1f} rows and "
                  f"{result['transactions_per_stream_per_minute']:.1f} transactions per stream per minute "
                  f"({streams} streams on 3 replicas, lease {lease:g} s)", flush=True)

            # Forwarded SSE.
            owners = {sid: i for i, r in enumerate(replicas) for sid in await own_streams(http, r)}
            stream_id = ids[0]
            owner = replicas[owners[stream_id]]
            other = next(r for r in replicas if r is not owner)
            added = await forwarded_latency(http, owner, other, stream_id, messages)
            result["forwarded_sse_added_ms"] = summary(added)
            print(f"forwarded SSE adds {result['forwarded_sse_added_ms']['p50']:.2f} ms (median, "
                  f"{len(added)} messages)", flush=True)

            # Failover.
            failovers = []
            for index in range(runs):
                owners = {sid: i for i, r in enumerate(replicas) for sid in await own_streams(http, r)}
                stream_id = ids[index % len(ids)]
                victim = owners[stream_id]
                replicas[victim].process.send_signal(signal.SIGKILL)
                killed = time.perf_counter()
                replicas[victim].process.wait()
                new_owner = None
                while new_owner is None:
                    for i, server in enumerate(replicas):
                        if i != victim and stream_id in await own_streams(http, server):
                            new_owner = server
                    if time.perf_counter() - killed > lease * 4 + 60:
                        raise RuntimeError("no failover")
                    await asyncio.sleep(0.05)
                detected = await asyncio.wait_for(first_detection(http, new_owner.url, stream_id), timeout=60)
                failovers.append(detected - killed)
                print(f"  failover {index + 1}: {failovers[-1]:.2f} s", flush=True)
                stop_server(replicas[victim])
                replicas[victim] = start_replica(model, database, lease)
                wait_server_ready(replicas[victim], timeout=180)
                await asyncio.sleep(lease)  # settle again
            result["failover_s"] = summary(failovers)
    finally:
        for server in replicas:
            stop_server(server)
        await files.stop()
        postgres.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--lease", type=float, default=5.0, help="RTC_LEASE_SECONDS of the replicas")
    parser.add_argument("--runs", type=int, default=3, help="kill -9 failovers")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of steady state for the write count")
    parser.add_argument("--messages", type=int, default=30, help="SSE messages compared direct vs forwarded")
    args = parser.parse_args()
    load_start = load()
    result = asyncio.run(run(args.streams, args.lease, args.runs, args.window, args.messages))
    failover, forwarded = result["failover_s"], result["forwarded_sse_added_ms"]
    print(table(["measure", "median", "min", "max"], [
        ["failover, kill -9 → first detection elsewhere (s)", failover["p50"], failover["min"], failover["max"]],
        ["forwarded SSE message, added (ms)", forwarded["p50"], forwarded["min"], forwarded["max"]],
        ["rows written per stream per minute", result["rows_written_per_stream_per_minute"], "", ""],
    ]))
    emit("replicas", result, load_start)


if __name__ == "__main__":
    main()
