"""Experiment (issue 13, 2026-11-30): server memory and CPU over an audio + video session.

Does audio pile up?

For each (path, audio policy) a fresh server process runs (``python -m rtc_server``
through ``bench.experiments.audio_policy_server``, which only sets the policy); one aiortc client in
this process sends video (the bus image, VP8/H.264 as negotiated) plus a 48 kHz stereo Opus
tone, through ``/offer`` (DetectionClient) or ``/whip`` (WhipClient), for ``--duration``
seconds. The server's RSS and CPU are sampled every second (psutil); reported: RSS after
connecting, at the end, growth, slope (least squares, MB/min), mean CPU, threads. Then,
in this process, what draining costs beyond memory: aiortc's own Opus decoder (the one the
server's receiver runs) decoding 10 s of the same tone, CPU seconds per second of audio.
On a shared machine the server CPU column is noise at this scale; that line is not.

Policies (``rtc_server.webrtc.peer.AudioPolicy``):
  queue    what the server did before issue 13: audio answered recvonly, decoded, never read
  drain    recvonly, read and dropped (the WHIP policy: RFC 9725 wants recvonly)
  decline  answered inactive: the client stops sending it (the /offer policy)

``queue`` patches the server's internals (``PeerSource._drain``), so this may not run on a
later tree; the choice it informed is made (``AudioPolicy``, docs/benchmarks.md).

    python -m bench.experiments.audio_memory [--duration 60] [--paths offer,whip]
        [--policies queue,drain,decline] [--size 640x480 --fps 30]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
from aiortc.codecs import get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from bench.common import (
    LOOPBACK,
    ProcessSampler,
    bus_rgb,
    emit,
    find_model,
    load,
    running_server,
    save_json,
    slope_per_minute,
    table,
)
from drivers.client import DetectionClient, ImageTrack, ToneTrack
from drivers.whip_client import WhipClient
from rtc_server.webrtc.ice import use_host_addresses


async def stream(url: str, path: str, frame: Any, fps: float, duration: float, pid: int) -> dict[str, Any]:
    video, audio = ImageTrack(frame, fps=fps), ToneTrack()
    client: DetectionClient | WhipClient
    if path == "offer":
        client = DetectionClient(url, video, audio=audio)
    else:
        client = WhipClient(f"{url}/whip", video, audio=audio)
    process = psutil.Process(pid)
    await client.connect()
    try:
        await asyncio.sleep(3)  # let decoders and buffers reach their working size
        started = time.perf_counter()
        times, rss = [], []
        while (elapsed := time.perf_counter() - started) < duration:
            times.append(elapsed)
            rss.append(process.memory_info().rss / 2**20)
            await asyncio.sleep(1.0)
        threads = process.num_threads()
        audio_sender = next(t.sender for t in client.pc.getTransceivers() if t.kind == "audio")
        sent = sum(s.packetsSent for s in (await audio_sender.getStats()).values() if s.type == "outbound-rtp")
    finally:
        await client.close()
    return {"rss_start_mb": rss[0], "rss_end_mb": rss[-1], "growth_mb": rss[-1] - rss[0],
            "slope_mb_per_min": slope_per_minute(times, rss), "threads": threads, "audio_packets_sent": sent}


def run(model: Path, path: str, policy: str, size: tuple[int, int], fps: float, duration: float) -> dict[str, Any]:
    frame = bus_rgb(*size)
    with running_server(model, module="bench.experiments.audio_policy_server",
                        env={"BENCH_AUDIO_POLICY": policy}) as server:
        sampler = ProcessSampler(server.pid).start()
        result = asyncio.run(asyncio.wait_for(stream(server.url, path, frame, fps, duration, server.pid),
                                              duration + 90))
        usage = sampler.stop()
    return {"path": path, "policy": policy, **result, "server_cpu_pct": usage["cpu_pct_mean"]}


def opus_decode_cost(seconds: float = 10.0) -> float:
    """CPU seconds aiortc's Opus decoder spends per second of 48 kHz stereo tone (20 ms frames)."""
    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=111)
    encoder, decoder = get_encoder(codec), get_decoder(codec)
    payloads = []
    for i in range(round(seconds / 0.02)):
        t = (np.arange(960) + i * 960) / 48_000
        mono = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2)[None, :], format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, i * 960, fractions.Fraction(1, 48_000)
        packets, _ = encoder.encode(frame)
        payloads += packets
    started = time.process_time()
    for i, payload in enumerate(payloads):
        decoder.decode(JitterFrame(data=payload, timestamp=i * 960))
    return (time.process_time() - started) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--paths", default="offer,whip")
    parser.add_argument("--policies", default="queue,drain,decline")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    use_host_addresses([LOOPBACK])  # the clients, like the server, offer loopback candidates only
    load_start = load()
    model = find_model()
    size = tuple(int(v) for v in args.size.split("x"))
    runs = []
    # interleaved: policy within path, so drift of the shared machine hits every policy alike
    for path in args.paths.split(","):
        for policy in args.policies.split(","):
            print(f"  {path} / {policy} for {args.duration:.0f} s ...", flush=True)
            runs.append(run(model, path, policy, size, args.fps, args.duration))  # type: ignore[arg-type]
    print(table(["path", "audio policy", "RSS start MB", "RSS end MB", "growth MB", "slope MB/min",
                 "server CPU %", "server threads", "audio pkts sent"],
                [[r["path"], r["policy"], r["rss_start_mb"], r["rss_end_mb"], r["growth_mb"], r["slope_mb_per_min"],
                  r["server_cpu_pct"], r["threads"], r["audio_packets_sent"]] for r in runs]))
    decode = opus_decode_cost()
    print(f"Opus decode (what draining costs per audio stream): {decode * 1000:.2f} ms CPU per second of audio "
          f"= {decode * 100:.2f} % of a core")
    if args.out:
        save_json(args.out, {"runs": runs, "opus_decode_core_share": decode})
    emit("audio_memory", {"duration_s": args.duration, "size": args.size, "fps": args.fps, "runs": runs,
                          "opus_decode_core_share": decode}, load_start)


if __name__ == "__main__":
    main()
