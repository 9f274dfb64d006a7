"""Experiment (issue 6, 2026-11-24): receive path, marker-bit release on vs off, in one run.

Sessions alternate.

One aiortc peer streams 640x480 at 30 fps over loopback to the server (same process, so
all stamps share one clock); sessions alternate stock / marker release (ABBA order, so
slow drifts of a shared machine hit both alike). For each codec and mode it prints the
frame-matched end-to-end latency (p50, p95, drift between the first and last third of
each session), the detections (same as before?), a stage budget (p50 ms per stage, see
``bench.experiments.marker_common``), the decode CPU per frame, and the model floor: raw
``session.run`` at 480x640 on its own onnxruntime session, measured in the same run before
and after all sessions and just before each one (the "p50 - floor" columns use the samples
taken before that mode's sessions). The last line is JSON.

    python -m bench.experiments.marker_release --seconds 10 --rounds 2 --codecs vp8,h264
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiortc
import av
import numpy as np
import onnxruntime as ort
from aiohttp import web
from aiortc import RTCRtpSender

from bench.common import find_model
from bench.experiments.marker_common import (
    STAGES,
    NoopDetector,
    StageClock,
    camera_frames,
    decode_cost,
    install,
    p50,
    percentile,
    stage_times,
    uninstall,
)
from drivers.client import DetectionClient, ImageTrack
from rtc_server.app import create_app
from rtc_server.config import Settings
from rtc_server.webrtc.marker_release import COUNTS, use_marker_release

WARMUP_S = 1.5  # connection set-up and the first keyframe: not steady state


class FloorMeter:
    """Raw ``session.run`` at 1x3x480x640 on its own onnxruntime session (the server's
    settings): the model floor. Sampled before every session too, because on a shared
    machine the floor moves with the neighbours' load."""

    def __init__(self, path: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._name = self._session.get_inputs()[0].name
        self._blob = np.random.default_rng(0).random((1, 3, 480, 640), dtype=np.float32)
        for _ in range(5):
            self._session.run(None, {self._name: self._blob})

    def sample(self, runs: int) -> list[float]:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self._session.run(None, {self._name: self._blob})
            times.append((time.perf_counter() - t0) * 1000)
        return times


def prefer_codec(client: DetectionClient, codec: str) -> None:
    """Offer only ``codec`` (plus RTX), as a browser that supports only it would."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in caps if c.mimeType.lower() in (f"video/{codec}", "video/rtx")]
    for transceiver in client.pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(chosen)


@dataclass
class SessionResult:
    codec: str
    marker: bool
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)
    decode_cpu: list[float] = field(default_factory=list)
    labels_ok: int = 0
    detections: int = 0
    negotiated: str = ""
    encoded: list[tuple[str, bytes, int]] = field(default_factory=list)
    #: model floor samples taken just before this session (ms)
    floor: list[float] = field(default_factory=list)


async def run_session(url: str, codec: str, marker: bool, fps: float, seconds: float,
                      frames: list[np.ndarray], noop: bool = False) -> SessionResult:
    use_marker_release(marker)
    clock = StageClock(keep_encoded=int(fps * 6))
    install(clock)
    result = SessionResult(codec, marker)
    client = DetectionClient(url, ImageTrack(frames, fps=fps))
    prefer_codec(client, codec)
    try:
        await client.connect()
        start = time.perf_counter()
        messages = []
        while time.perf_counter() - start < seconds + WARMUP_S:
            messages.append(await client.next_message())
        await asyncio.sleep(0.2)
    finally:
        await client.close()
        uninstall()
    sdp = client.pc.remoteDescription.sdp if client.pc.remoteDescription else ""
    result.negotiated = next((ln.split()[1].split("/")[0] for ln in sdp.splitlines()
                              if ln.startswith("a=rtpmap:")), "?")
    sent_at = client.track.sent_at
    steady_from = start + WARMUP_S
    result.sent = sum(1 for t in sent_at.values() if t >= steady_from)
    for m in messages:
        pts = m["pts"]
        if pts not in sent_at or sent_at[pts] < steady_from or pts not in client.received_at:
            continue
        latency = client.latency_ms(m)
        assert latency is not None
        result.latencies.append(latency)
        labels = {d["label"] for d in m["detections"]}
        result.labels_ok += {"bus", "person"} <= labels or (not labels and noop)
        result.detections += len(m["detections"])
        stamps = clock.frames.get(pts)
        if stamps is not None:
            stages = stage_times(m, sent_at[pts], client.received_at[pts], stamps)
            if stages is not None:
                result.stages.append(stages)
    result.decode_cpu = [s.decode_cpu * 1000 for pts, s in clock.frames.items()
                         if s.decode_cpu is not None and pts in sent_at and sent_at[pts] >= steady_from]
    result.encoded = clock.encoded
    return result


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def summarise(results: list[SessionResult], codec: str, marker: bool) -> dict[str, Any]:
    mine = [r for r in results if r.codec == codec and r.marker == marker]
    latencies = [x for r in mine for x in r.latencies]
    drifts = []
    for r in mine:
        third = len(r.latencies) // 3
        if third >= 5:
            drifts.append(p50(r.latencies[-third:]) - p50(r.latencies[:third]))  # type: ignore[operator]
    stages = {name: p50(s[name] for r in mine for s in r.stages) for name, _ in STAGES}
    answered = len(latencies)
    return {
        "codec": codec, "marker": marker, "negotiated": sorted({r.negotiated for r in mine}),
        "frames_sent": sum(r.sent for r in mine), "answered": answered,
        "e2e_p50_ms": p50(latencies), "e2e_p95_ms": percentile(latencies, 0.95),
        "drift_ms": max(drifts, key=abs) if drifts else None,
        "bus_and_person_rate": sum(r.labels_ok for r in mine) / answered if answered else None,
        "detections_per_frame": sum(r.detections for r in mine) / answered if answered else None,
        "decode_thread_cpu_p50_ms": p50(x for r in mine for x in r.decode_cpu),
        "stages_p50_ms": stages,
        "stage_e2e_p50_ms": p50(s["e2e"] for r in mine for s in r.stages),
        "floor_p50_ms": p50(x for r in mine for x in r.floor),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    path = find_model(args.model)
    meter = FloorMeter(path, args.threads)
    floor_before = meter.sample(args.floor_runs)
    settings = Settings(model=path, ice_addresses=("127.0.0.1",), ice_allow_networks=("127.0.0.0/8",),
                        threads=args.threads, marker_release=True)
    app = create_app(settings, NoopDetector() if args.detector == "noop" else None)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        while (await http.get(f"{url}/readyz")).status != 200:
            await asyncio.sleep(0.05)
    frames = camera_frames(60)
    results: list[SessionResult] = []
    codecs = [c.strip().lower() for c in args.codecs.split(",") if c.strip()]
    try:
        for round_no in range(args.rounds):
            for codec in codecs:
                for marker in ((False, True) if round_no % 2 == 0 else (True, False)):
                    before = COUNTS.marker
                    floor = meter.sample(args.session_floor_runs)
                    r = await run_session(url, codec, marker, args.fps, args.seconds, frames,
                                          noop=args.detector == "noop")
                    print(f"# round {round_no} {codec:4s} marker={'on ' if marker else 'off'} "
                          f"({r.negotiated}): {len(r.latencies)} answered, e2e p50 {fmt(p50(r.latencies))} ms, "
                          f"marker releases {COUNTS.marker - before}", file=sys.stderr, flush=True)
                    r.floor = floor
                    results.append(r)
    finally:
        await runner.cleanup()
        use_marker_release(True)
    floor_after = meter.sample(args.floor_runs)
    floor = p50(floor_before + floor_after + [x for r in results for x in r.floor])
    assert floor is not None

    summary: dict[str, Any] = {"codecs": {}, "floor_p50_ms": floor,
                               "floor_before_p50_ms": p50(floor_before), "floor_after_p50_ms": p50(floor_after)}
    for codec in codecs:
        off, on = summarise(results, codec, False), summarise(results, codec, True)
        encoded = next((r.encoded for r in results if r.codec == codec and r.encoded), [])
        summary["codecs"][codec] = {"off": off, "on": on, "decode_cost": decode_cost(encoded) if encoded else None}
    summary["meta"] = {
        "fps": args.fps, "seconds": args.seconds, "rounds": args.rounds, "size": "640x480",
        "python": platform.python_version(), "aiortc": aiortc.__version__, "av": av.__version__,
        "onnxruntime": ort.__version__, "cpus": os.cpu_count(), "machine": platform.machine(),
        "model": path.name, "threads": args.threads, "detector": args.detector,
    }
    return summary


def print_report(summary: dict[str, Any]) -> None:
    floor = summary["floor_p50_ms"]
    print(f"model floor (session.run 480x640) p50, all samples: {floor:.1f} ms "
          f"(before the sessions {summary['floor_before_p50_ms']:.1f}, after {summary['floor_after_p50_ms']:.1f})")
    print()
    print("| codec | release | answered/sent | e2e p50 | e2e p95 | floor (before these sessions) | p50 - floor | "
          "p95 - floor | drift | bus+person | dets/frame |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for codec, both in summary["codecs"].items():
        for mode in ("off", "on"):
            s = both[mode]
            p50v, p95v, floor = s["e2e_p50_ms"], s["e2e_p95_ms"], s["floor_p50_ms"]
            print(f"| {codec} | {'marker' if mode == 'on' else 'stock'} | {s['answered']}/{s['frames_sent']} | "
                  f"{fmt(p50v)} | {fmt(p95v)} | {fmt(floor)} | {fmt(p50v - floor if p50v else None)} | "
                  f"{fmt(p95v - floor if p95v else None)} | {fmt(s['drift_ms'])} | "
                  f"{fmt(100 * s['bus_and_person_rate'] if s['bus_and_person_rate'] is not None else None)} % | "
                  f"{fmt(s['detections_per_frame'])} |")
    print()
    codecs = list(summary["codecs"])
    header = " | ".join(f"{c} stock | {c} marker" for c in codecs)
    print(f"| stage (p50 ms) | {header} | what |")
    print("|---|" + "---|" * (2 * len(codecs)) + "---|")
    for name, what in [*STAGES, ("e2e", "frame handed to the sender -> its detections at the client")]:
        cells = []
        for c in codecs:
            for mode in ("off", "on"):
                s = summary["codecs"][c][mode]
                cells.append(fmt(s["stage_e2e_p50_ms"] if name == "e2e" else s["stages_p50_ms"][name]))
        print(f"| {name} | {' | '.join(cells)} | {what} |")
    print()
    print("| codec | decode CPU/frame (all threads) | decode+RGB CPU/frame | decode wall/frame | "
          "decoder-thread CPU p50 (live) | mean frame bytes |")
    print("|---|---|---|---|---|---|")
    for codec, both in summary["codecs"].items():
        d = both["decode_cost"] or {}
        print(f"| {codec} | {fmt(d.get('decode_cpu_ms'))} ms | {fmt(d.get('decode_rgb_cpu_ms'))} ms | "
              f"{fmt(d.get('decode_wall_ms'))} ms | {fmt(both['on']['decode_thread_cpu_p50_ms'])} ms | "
              f"{d.get('mean_frame_bytes', 0):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="YOLO11 ONNX (default: ../shared/models or models/)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="steady-state seconds per session")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs per codec (ABBA order)")
    parser.add_argument("--codecs", default="vp8,h264")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    parser.add_argument("--detector", choices=("yolo", "noop"), default="yolo",
                        help="noop: answer at once, to see the receive path alone")
    parser.add_argument("--floor-runs", type=int, default=40, help="floor samples before and after all sessions")
    parser.add_argument("--session-floor-runs", type=int, default=10, help="floor samples before each session")
    args = parser.parse_args()
    summary = asyncio.run(main_async(args))
    print_report(summary)
    print(json.dumps(summary, default=lambda o: round(o, 3) if isinstance(o, float) else str(o)))


if __name__ == "__main__":
    main()
