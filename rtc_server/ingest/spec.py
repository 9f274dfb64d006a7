"""What a pull stream is asked to be: ``{"url", "loop"?, "conf"?, "iou"?, "classes"?, "model"?,
"max_fps"?, "tracking"?, "zones"?, "lines"?}`` — the body of ``POST /streams`` and each entry of ``RTC_SOURCES``.

The detection settings are the fields of a data channel ``config`` message and are checked
by the same function (``streams.control.apply_config``), so a pulled stream accepts exactly
what a WebRTC session accepts. The URL's policy check is not done here (it needs the
server's settings and, for host names, the network): see ``policy``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.yolo import Thresholds
from ..streams.control import SETTING_FIELDS, ClassesOf, ControlError, StreamSettings, apply_config

FIELDS = frozenset({"url", "loop", *SETTING_FIELDS})


class PullSpecError(ValueError):
    """A stream request the server will not act on; the text says what to change."""


@dataclass(frozen=True)
class PullSpec:
    url: str
    #: For a source with an end (a file, a VOD playlist): start again at the end instead
    #: of ending the stream.
    loop: bool = False
    #: Detection settings as a ``config`` control message would set them (validated).
    config: Mapping[str, Any] = field(default_factory=dict)

    def settings(self, base: StreamSettings, classes_of: ClassesOf | None = None) -> StreamSettings:
        """``base`` (the server's defaults) with this request's settings applied; ``classes_of``
        checks the ``classes`` of its zones and lines against the model's class names
        (``ControlError`` if one is unknown)."""
        model = self.config.get("model")
        return apply_config(base, dict(self.config), (model,) if isinstance(model, str) else (), classes_of)

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "loop": self.loop, **self.config}


def parse_pull_spec(body: object, models: Sequence[str] | None, classes_of: ClassesOf | None = None) -> PullSpec:
    """Check a stream request's shape and settings. ``models`` are the names ``model`` may
    take; None defers that check (configuration is read before the models are loaded), as
    ``classes_of`` None defers the check of zones' and lines' ``classes``."""
    if isinstance(body, str):
        body = {"url": body}
    if not isinstance(body, Mapping):
        raise PullSpecError("a stream is a JSON object with a 'url' (or, in RTC_SOURCES, a URL string)")
    extra = set(body) - FIELDS
    if extra:
        raise PullSpecError(f"unknown fields {sorted(extra)}; a stream has {', '.join(sorted(FIELDS))}")
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise PullSpecError("'url' must be a non-empty string")
    loop = body.get("loop", False)
    if not isinstance(loop, bool):
        raise PullSpecError("'loop' must be true or false")
    config = {k: body[k] for k in SETTING_FIELDS if k in body}
    model = config.get("model")
    allowed = models if models is not None else ((model,) if isinstance(model, str) else ())
    try:
        apply_config(StreamSettings(Thresholds()), dict(config), allowed, classes_of)
    except ControlError as exc:
        raise PullSpecError(str(exc)) from exc
    return PullSpec(url, loop, config)


def parse_sources(text: str) -> tuple[Any, ...]:
    """``RTC_SOURCES``: a JSON list (of URL strings or stream objects) or a comma list of URLs."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(value, list):
            raise ValueError("a JSON value must be a list of URLs or stream objects")
        items: list[Any] = value
    else:
        items = [part.strip() for part in text.split(",") if part.strip()]
    return tuple({"url": item} if isinstance(item, str) else item for item in items)
