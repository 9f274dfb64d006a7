"""``python -m rtc_server`` that also records every stream's detection messages server-side.

For benches that need the detections of sessions without a data channel (WHIP) — until
they read them over SSE (``GET /sessions/{id}/events``): every stream the registry opens
gets a sink that appends one JSON line per message to ``$BENCH_PROBE_FILE``::

    {"id": ..., "kind": "whip", "created": <stream.created_at>, "t": <perf_counter at publish>,
     "pts": ..., "frame_id": ..., "labels": [...]}

``created`` (``time.monotonic``) and ``t`` (``time.perf_counter``) are both CLOCK_MONOTONIC
on Linux, the clock every other process here reads too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any

from rtc_server.__main__ import main
from rtc_server.streams.registry import StreamRegistry
from rtc_server.streams.stream import Stream


class FileSink:
    def __init__(self, stream: Stream, out: IO[str]) -> None:
        self._stream, self._out = stream, out

    def send(self, message: dict[str, Any]) -> None:
        if message.get("type") != "detections":
            return
        record = {"id": self._stream.id, "kind": self._stream.source_kind, "created": self._stream.created_at,
                  "t": time.perf_counter(), "pts": message.get("pts"), "frame_id": message.get("frame_id"),
                  "labels": sorted({d["label"] for d in message["detections"]})}
        self._out.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._out.flush()


def install(path: str) -> None:
    out = open(path, "a", buffering=1)
    original = StreamRegistry.open

    def open_with_probe(self: StreamRegistry, *args: Any, **kwargs: Any) -> Stream:
        stream = original(self, *args, **kwargs)
        stream.add_sink(FileSink(stream, out))
        return stream

    StreamRegistry.open = open_with_probe  # type: ignore[method-assign]


if __name__ == "__main__":
    install(os.environ["BENCH_PROBE_FILE"])
    sys.exit(main())
