"""What following sessions costs the server: SSE fan-out, snapshots, per-stream stats.

1. Fan-out: a stream publishes real detection messages (bus.jpg's, ~1.5 KB of JSON) at a
   camera-like pace to N SSE subscribers that read as fast as they can, in a separate
   process; the server's CPU time (this process: event loop and all) per message, what each
   subscriber adds over publishing alone, and how many messages each reader got.
2. Snapshots: converting and JPEG-encoding a decoded frame (yuv420p, as decoders give it),
   per request, at two sizes.
3. Per-stream stats: what ``Stream.push`` and each detection now add (``StreamStats``), and
   one ``GET /sessions`` summary of full windows.

    python -m bench.consumers [--messages 600] [--rate 60] [--subscribers 1,10,50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import av
import numpy as np
from aiohttp import web

from bench.common import ROOT, bus_rgb, emit, find_model, load, summary, table
from rtc_server.app import create_app
from rtc_server.config import Settings
from rtc_server.engine.yolo import Thresholds
from rtc_server.signaling.context import INFERENCE, REGISTRY
from rtc_server.streams.messages import FrameCounts, detection_message
from rtc_server.streams.snapshot import encode_jpeg, to_bgr
from rtc_server.streams.stats import MAX_ENTRIES, StreamStats

#: N SSE readers in one process: print how many data lines each got, as JSON, at the end.
READERS = textwrap.dedent("""
    import asyncio, json, sys
    import aiohttp

    async def read(http, url, counts, i):
        async with http.get(url) as r:
            async for line in r.content:
                if line.startswith(b"data: "):
                    counts[i] += 1
                    if b'"closed"' in line:
                        return

    async def main(url, n):
        counts = [0] * n
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            tasks = [asyncio.ensure_future(read(http, url, counts, i)) for i in range(n)]
            print("ready", flush=True)
            await asyncio.gather(*tasks)
        print(json.dumps(counts), flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def fan_out(app: web.Application, url: str, message: dict, subscribers: int, count: int,
                  rate: float) -> dict[str, float]:
    registry = app[REGISTRY]
    stream = registry.open("pull")
    readers = None
    if subscribers:
        readers = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READERS, f"{url}/sessions/{stream.id}/events", str(subscribers),
            stdout=asyncio.subprocess.PIPE, cwd=ROOT)
        assert readers.stdout is not None
        await readers.stdout.readline()  # "ready"
        async with asyncio.timeout(60):
            while sum(1 for _ in stream.sinks) < subscribers:
                await asyncio.sleep(0.01)
    interval = 1.0 / rate
    cpu0, wall0 = cpu_s(), time.perf_counter()
    for i in range(count):
        stream.publish({**message, "frame_id": i})
        delay = wall0 + (i + 1) * interval - time.perf_counter()
        await asyncio.sleep(max(0.0, delay))
    await asyncio.sleep(0.2)  # let the last writes go out
    cpu = cpu_s() - cpu0
    await stream.close("bench done")
    delivered = [count]
    if readers is not None:
        out, _ = await readers.communicate()
        delivered = [g - 2 for g in json.loads(out.decode().strip().splitlines()[-1])]  # minus config and closed
    return {"subscribers": subscribers, "messages": count, "cpu_ms_per_message": cpu / count * 1000,
            "delivered_min_pct": 100 * min(delivered) / count, "delivered_mean_pct": 100 * np.mean(delivered) / count}


def snapshot_costs(repeats: int) -> list[dict[str, float]]:
    rows = []
    for width, height in ((640, 480), (1280, 720)):
        frame = av.VideoFrame.from_ndarray(bus_rgb(width, height), format="rgb24").reformat(format="yuv420p")
        convert, encode = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            to_bgr(frame)
            t1 = time.perf_counter()
            jpeg = encode_jpeg(frame)
            t2 = time.perf_counter()
            convert.append((t1 - t0) * 1000)
            encode.append((t2 - t1) * 1000)
        rows.append({"size": f"{width}x{height}", "convert_ms_p50": summary(convert)["p50"],
                     "convert_and_encode_ms_p50": summary(encode)["p50"], "jpeg_kb": len(jpeg) / 1024})
    return rows


def stats_costs() -> dict[str, float]:
    stats = StreamStats()
    n = 200_000
    t0 = time.perf_counter()
    for i in range(n):
        stats.received(i * 1e-6)
    per_frame_ns = (time.perf_counter() - t0) / n * 1e9
    t0 = time.perf_counter()
    for i in range(n):
        stats.processed(i * 1e-6, 20.0)
    per_detection_ns = (time.perf_counter() - t0) / n * 1e9
    full = StreamStats(window=1e9)  # every entry inside the window: the most a summary can cost
    for i in range(MAX_ENTRIES):
        full.received(time.perf_counter())
        full.processed(time.perf_counter(), float(i % 50))
    summaries = []
    for _ in range(200):
        t0 = time.perf_counter()
        full.summary()
        summaries.append((time.perf_counter() - t0) * 1e6)
    return {"push_ns": per_frame_ns, "detection_ns": per_detection_ns, "summary_us_p50": summary(summaries)["p50"]}


async def run(args: argparse.Namespace) -> dict:
    # One client address by design: no per-client rate limit, no subscriber cap.
    app = create_app(Settings(model=find_model(), max_subscribers=0, rate_limit=0, threads=1, log_level="WARNING",
                                data_dir=Path(tempfile.mkdtemp(prefix="rtc-bench-data-"))))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    result = await app[INFERENCE].detect(bus_rgb(), Thresholds())
    now = time.perf_counter()
    message = detection_message(result, received_at=now, done_at=now, frame_id=0, pts=0,
                                counts=FrameCounts(1, 1, 0))
    fan = []
    for n in [0, *args.subscribers]:  # 0: publishing alone, the baseline
        fan.append(await fan_out(app, url, message, n, args.messages, args.rate))
    for row in fan:  # what each subscriber adds, above the baseline
        n = row["subscribers"]
        row["cpu_us_per_message_per_subscriber"] = (
            (row["cpu_ms_per_message"] - fan[0]["cpu_ms_per_message"]) * 1000 / n if n else 0.0)
    await runner.cleanup()
    return {"message_bytes": len(json.dumps(message, separators=(",", ":"))), "fan_out": fan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rate", type=float, default=60.0, help="messages per second published")
    parser.add_argument("--subscribers", type=lambda t: [int(x) for x in t.split(",")], default=[1, 10, 50])
    parser.add_argument("--snapshot-repeats", type=int, default=50)
    args = parser.parse_args()
    load_start = load()
    served = asyncio.run(run(args))
    snaps = snapshot_costs(args.snapshot_repeats)
    stats = stats_costs()
    print(f"SSE fan-out: {args.messages} detection messages ({served['message_bytes']} B) at {args.rate:g}/s")
    print(table(["subscribers", "server CPU ms/message", "each subscriber adds (CPU µs/message)", "delivered (min %)",
                 "delivered (mean %)"],
                [[r["subscribers"], r["cpu_ms_per_message"], r["cpu_us_per_message_per_subscriber"],
                  r["delivered_min_pct"], r["delivered_mean_pct"]] for r in served["fan_out"]]))
    print("\nsnapshot.jpg, per request (yuv420p frame -> BGR -> JPEG q80)")
    print(table(["frame", "convert ms (p50)", "convert + encode ms (p50)", "JPEG KiB"],
                [[r["size"], r["convert_ms_p50"], r["convert_and_encode_ms_p50"], r["jpeg_kb"]] for r in snaps]))
    print("\nper-stream stats")
    print(table(["per received frame (ns)", "per detection (ns)", "GET /sessions summary of full windows (µs, p50)"],
                [[stats["push_ns"], stats["detection_ns"], stats["summary_us_p50"]]]))
    emit("consumers", {**served, "snapshot": snaps, "stats": stats, "args": {
        "messages": args.messages, "rate": args.rate}}, load_start)


if __name__ == "__main__":
    main()
    sys.exit(0)
