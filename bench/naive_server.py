"""The naive aiortc pattern, for comparison only: process every frame, in order, no dropping.

This is what most aiortc examples do (``frame = await track.recv()`` then run the model on
it, then the next ``recv()``). aiortc decodes frames into an unbounded queue behind
``recv()``, so when the model is slower than the camera each frame waits behind all the
earlier ones and latency grows for as long as the stream lasts.

It uses the service's own detector, scheduler (one image at a time) and message format — only the
newest-frame mailbox is missing — so the comparison isolates exactly that design choice.
Same endpoints as the real server for what the benchmark needs (``POST /offer``,
``GET /readyz``); ICE on 127.0.0.1 only.

    python -m bench.naive_server --port 8090 --model ../shared/models/yolo11n.onnx
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from aiohttp import web
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rtc_server.engine.catalog import ModelCatalog
from rtc_server.engine.loader import load_detector
from rtc_server.engine.scheduler import Scheduler, SchedulerConfig
from rtc_server.engine.yolo import Thresholds
from rtc_server.streams.messages import FrameCounts, detection_message, encode
from rtc_server.webrtc.ice import rtc_configuration, use_host_addresses

INFERENCE = web.AppKey("inference", Scheduler)
PEERS = web.AppKey("peers", set)


async def process_every_frame(track: MediaStreamTrack, channel: RTCDataChannel, inference: Scheduler) -> None:
    frame_id = 0
    try:
        while True:
            frame = await track.recv()
            received_at = time.perf_counter()  # when this loop got it: the aiortc queue wait is hidden
            result = await inference.detect(frame, Thresholds())
            message = detection_message(result, received_at=received_at,
                                        done_at=time.perf_counter(), frame_id=frame_id, pts=frame.pts,
                                        counts=FrameCounts(frame_id + 1, frame_id + 1, 0))
            if channel.readyState == "open":
                channel.send(encode(message))
            frame_id += 1
    except MediaStreamError:
        pass


async def offer(request: web.Request) -> web.Response:
    body = await request.json()
    pc = RTCPeerConnection(rtc_configuration([]))
    request.app[PEERS].add(pc)
    channels: list[RTCDataChannel] = []
    ready = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        channels.append(channel)
        ready.set()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        async def run() -> None:
            await ready.wait()
            await process_every_frame(track, channels[0], request.app[INFERENCE])
        tasks.append(asyncio.create_task(run()))

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed", "disconnected"):
            for task in tasks:
                task.cancel()
            await pc.close()
            request.app[PEERS].discard(pc)

    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                              "session_id": str(id(pc))})


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"ready": request.app[INFERENCE].ready}, status=200 if request.app[INFERENCE].ready
                             else 503)


async def lifetime(app: web.Application) -> object:
    await app[INFERENCE].warmup()
    yield
    await asyncio.gather(*(pc.close() for pc in list(app[PEERS])), return_exceptions=True)
    app[INFERENCE].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    args = parser.parse_args()
    use_host_addresses(["127.0.0.1"])
    app = web.Application()
    # One frame at a time through the scheduler's single-image door; never refused.
    app[INFERENCE] = Scheduler(ModelCatalog.of(load_detector(args.model, backend="onnxruntime")),
                               SchedulerConfig(predict_max_wait_s=3600.0))
    app[PEERS] = set()
    app.router.add_post("/offer", offer)
    app.router.add_get("/readyz", readyz)
    app.cleanup_ctx.append(lifetime)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
