"""``EventOutputs``: every configured event output behind the one ``EventSink`` a stream holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class EventOutput(Protocol):
    wants_detections: bool

    def publish(self, stream_id: str, message: dict[str, Any], webhooks: Sequence[Any] = ()) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class EventOutputs:
    """Fans each event out to every output; ``publish`` never blocks (each output queues,
    bounded, and delivers from a task of its own)."""

    def __init__(self, outputs: Sequence[EventOutput] = ()) -> None:
        self.outputs = tuple(outputs)
        self.wants_detections = any(o.wants_detections for o in self.outputs)

    def __bool__(self) -> bool:
        return bool(self.outputs)

    def publish(self, stream_id: str, message: dict[str, Any], webhooks: Sequence[Any] = ()) -> None:
        for output in self.outputs:
            output.publish(stream_id, message, webhooks)

    def check_webhook(self, url: str) -> None:
        """``ValueError`` saying why a stream may not name this webhook URL."""
        checkers = [o for o in self.outputs if hasattr(o, "check")]
        if not checkers:
            raise ValueError("this server delivers no webhooks")
        for output in checkers:
            output.check(url)

    async def start(self) -> None:
        for output in self.outputs:
            await output.start()

    async def close(self) -> None:
        for output in self.outputs:
            await output.close()
