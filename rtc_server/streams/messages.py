"""The JSON messages the server sends and accepts — one place for the wire format.

Detection message (one per processed frame on the ``detections`` data channel, and the
body of ``POST /predict``)::

    {"type": "detections", "frame_id": 17, "pts": 153000, "width": 640, "height": 480,
     "input_hw": [480, 640],
     "detections": [{"box": [x1, y1, x2, y2], "score": 0.93, "class_id": 5, "label": "bus"}],
     "timing": {"queue_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "server_ms"},
     "frames": {"received": 18, "processed": 12, "dropped": 6},
     "model": {"name": "yolo11n", "version": "8.3.250", "sha256": "c130b90b1d81"}}

``frame_id`` counts frames received by the session (0-based, dropped ones included, so a
gap shows what was skipped); ``pts`` is the frame's pts exactly as aiortc handed it over
(90 kHz clock), so a sender can match each message to the frame it sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..engine.detector import DetectionResult


@dataclass(frozen=True)
class FrameCounts:
    received: int
    processed: int
    dropped: int


def _ms(value: float) -> float:
    return round(value, 3)


def detection_message(
    result: DetectionResult,
    *,
    received_at: float,
    done_at: float,
    frame_id: int | None = None,
    pts: int | None = None,
    counts: FrameCounts | None = None,
) -> dict[str, Any]:
    """Build the detection message; ``received_at``/``done_at`` are ``perf_counter`` stamps."""
    message: dict[str, Any] = {
        "type": "detections",
        "frame_id": frame_id,
        "pts": pts,
        "width": result.width,
        "height": result.height,
        "input_hw": list(result.input_hw),
        "detections": [d.to_dict() for d in result.detections],
        "timing": {
            "queue_ms": _ms((result.started_at - received_at) * 1000),
            "preprocess_ms": _ms(result.preprocess_ms),
            "inference_ms": _ms(result.inference_ms),
            "postprocess_ms": _ms(result.postprocess_ms),
            "server_ms": _ms((done_at - received_at) * 1000),
            "batch_size": result.batch_size,
        },
        "model": result.model.to_dict(),
    }
    if counts is not None:
        message["frames"] = {"received": counts.received, "processed": counts.processed, "dropped": counts.dropped}
    return message


def error_message(error: str, detail: str) -> dict[str, str]:
    """The same ``{"error", "detail"}`` shape as HTTP errors, for the data channel."""
    return {"type": "error", "error": error, "detail": detail}


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
