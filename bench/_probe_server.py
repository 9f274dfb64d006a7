"""``python -m rtc_server`` that also records every stream's detection messages server-side.

``bench.whip_latency``'s instrument (run as ``python -m bench._probe_server`` with the
server's own flags): every stream the registry opens gets a sink that appends one JSON line
per message to ``$BENCH_PROBE_FILE``::

    {"id": ..., "kind": "whip", "created": <stream.created_at>, "t": <perf_counter at publish>,
     "pts": ..., "frame_id": ..., "labels": [...]}

``created`` (``time.monotonic``) and ``t`` (``time.perf_counter``) are both CLOCK_MONOTONIC
on Linux, the clock every other process here reads too.

Why not SSE (``GET /sessions/{id}/events``), as a client would: the bench measures to the
moment the server *published* (a WHIP session has no data channel back, so both paths end
at the server), and a WHIP session's id is FFmpeg's, in another process. The probe wraps
``StreamRegistry.open`` and so follows that method's signature: ``tests/test_bench_cli.py``
runs this module's ``--help``, and a short ``whip_latency`` run checks the rest.
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
