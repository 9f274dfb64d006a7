"""WHIP from FFmpeg next to ``/offer`` from aiortc, same server, same run: frame-matched
latency and connection set-up time (issue 13).

One server process (``bench._probe_server``: the real server, plus a sink on every stream
that records when each detection message is published). Then, alternating for
``--rounds`` rounds, each for ``--duration`` seconds of 640x480 at 30 fps of the bus image:

* ``offer``: ``drivers.client.DetectionClient`` (aiortc, H.264 as the server prefers it),
  ``POST /offer``, detections on the data channel;
* ``whip``: FFmpeg's WHIP muxer (``drivers.ffmpeg_whip``: PyAV's FFmpeg, libx264
  zerolatency, in its own process) with a P-256 certificate — PyAV's FFmpeg makes P-224
  by default, which no OpenSSL 4 peer accepts (docs/whip.md).

Latency is frame-matched: the moment a frame was handed to its sender (aiortc track /
FFmpeg muxer; ``perf_counter``, CLOCK_MONOTONIC in every process) to the moment the server
published the detection message answering exactly that frame (matched by pts; FFmpeg's
frame index is ``pts / 3000``). It ends at the server for both paths: WHIP has no data
channel back, so the ``/offer`` figure leaves out the data-channel hop too (it is printed
separately: client receive - server publish). Set-up: from the client's POST (FFmpeg: the
first ``mux()``, which POSTs; aiortc: ``connect()``) to the first detection published,
and from the server's stream creation to it.

The detections are read server-side (``bench._probe_server`` says why not over SSE).

    python -m bench.whip_latency [--duration 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import (
    FIXTURE,
    LOOPBACK,
    ROOT,
    emit,
    find_model,
    load,
    running_server,
    save_json,
    summary,
    table,
)
from drivers.client import DetectionClient, ImageTrack
from drivers.ffmpeg_whip import camera_frame, write_certificate
from rtc_server.webrtc.ice import use_host_addresses

FPS = 30
TICKS = 90_000 // FPS


async def offer_round(url: str, duration: float) -> dict[str, Any]:
    track = ImageTrack(camera_frame(FIXTURE), fps=FPS)  # the very frame FFmpeg sends
    client = DetectionClient(url, track)
    posted = time.perf_counter()
    await client.connect()
    try:
        await asyncio.sleep(duration)
    finally:
        await client.close()
    return {"path": "offer", "id": client.session_id, "posted": posted, "sent": dict(track.sent_at),
            "received": dict(client.received_at)}


def whip_round(url: str, duration: float, tmp: Path) -> dict[str, Any]:
    cert, key = write_certificate(tmp)
    timeline = tmp / "timeline.json"
    run = subprocess.run([sys.executable, "-m", "drivers.ffmpeg_whip", f"{url}/whip", "--image", str(FIXTURE),
                          "--fps", str(FPS), "--seconds", str(duration), "--cert-file", str(cert),
                          "--key-file", str(key), "--timeline", str(timeline)],
                         cwd=ROOT, capture_output=True, text=True, timeout=duration + 60)
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0:
        raise RuntimeError(f"ffmpeg_whip failed: {events} {run.stderr[-1500:]}")
    sent = {int(i) * TICKS: t for i, t in json.loads(timeline.read_text())["sent"].items()}
    start = next(e for e in events if e["event"] == "start")
    connected = next(e for e in events if e["event"] == "connected")
    return {"path": "whip", "posted": start["t"], "connected_s": connected["setup_s"], "sent": sent, "received": {}}


def analyse(round_: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    first = records[0]
    latency = [(r["t"] - round_["sent"][r["pts"]]) * 1000 for r in records if r["pts"] in round_["sent"]]
    back = [(round_["received"][r["pts"]] - r["t"]) * 1000 for r in records if r["pts"] in round_["received"]]
    span = records[-1]["t"] - first["t"]
    return {
        "path": round_["path"],
        "setup_from_post_s": first["t"] - round_["posted"],
        "setup_from_session_s": first["t"] - first["created"],
        "matched": len(latency),
        "latency_ms": summary(latency),
        "datachannel_back_ms": summary(back),
        "detections_per_s": (len(records) - 1) / span if span > 0 else float("nan"),
        "labels_first": first["labels"],
        **({"ffmpeg_connect_s": round_["connected_s"]} if "connected_s" in round_ else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    use_host_addresses([LOOPBACK])
    load_start = load()
    model = find_model()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="whip-latency-") as tmp_dir:
        tmp = Path(tmp_dir)
        probe = tmp / "detections.jsonl"
        with running_server(model, module="bench._probe_server", env={"BENCH_PROBE_FILE": str(probe)}) as server:
            for n in range(args.rounds):
                print(f"  round {n + 1}: /offer for {args.duration:.0f} s ...", flush=True)
                rounds.append(asyncio.run(offer_round(server.url, args.duration)))
                print(f"  round {n + 1}: /whip (FFmpeg) for {args.duration:.0f} s ...", flush=True)
                lines = probe.read_text().splitlines() if probe.exists() else []
                before = {json.loads(line)["id"] for line in lines}
                rounds.append(whip_round(server.url, args.duration, tmp))
                after = [json.loads(line) for line in probe.read_text().splitlines()]
                rounds[-1]["id"] = next(r["id"] for r in after if r["kind"] == "whip" and r["id"] not in before)
        by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in probe.read_text().splitlines():
            record = json.loads(line)
            by_id[record["id"]].append(record)
    results = [analyse(r, by_id[r["id"]]) for r in rounds]
    print(table(["path", "set-up from POST s", "from session s", "matched", "latency p50 ms", "p95 ms", "p99 ms",
                 "det/s", "DC back p50 ms", "first labels"],
                [[r["path"], r["setup_from_post_s"], r["setup_from_session_s"], r["matched"], r["latency_ms"]["p50"],
                  r["latency_ms"]["p95"], r["latency_ms"]["p99"], r["detections_per_s"],
                  r["datachannel_back_ms"]["p50"], ",".join(r["labels_first"])] for r in results]))
    if args.out:
        save_json(args.out, {"results": results})
    emit("whip_latency", {"duration_s": args.duration, "rounds": args.rounds, "results": results}, load_start)


if __name__ == "__main__":
    main()
