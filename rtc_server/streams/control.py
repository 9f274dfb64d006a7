"""Client -> server control messages on the data channel: parsing and validation.

Kept apart from ``Stream`` so that the whole input surface of a control channel is one
pure function — ``parse_control(raw, current, models)`` — which the fuzz tests drive with
arbitrary input: it returns a decision or raises ``ControlError``, nothing else.

``StreamSettings`` is what a client may set for its stream: the detection thresholds,
which model runs its frames, at most how many detections per second it wants, and what the
stream derives over time (issue 21): ``tracking`` (on by default) and its ``zones`` and
``lines`` (``rtc_server/analytics/geometry.py`` validates them; bad geometry is a
``ControlError`` that says why).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ..analytics.geometry import GeometryError, Line, Zone, parse_lines, parse_zones
from ..engine.yolo import Thresholds

#: Largest control message accepted; settings alone are well under 200 bytes, zones and
#: lines (at most 32 shapes of at most 64 points, ``analytics.geometry``) need more.
MAX_CONTROL_BYTES = 16384
#: The class ids a ``config`` message may name (COCO has 80; room for larger heads).
MAX_CLASS_ID = 1000
#: The largest ``max_fps`` a stream may ask for (above any camera's rate).
MAX_FPS = 240.0


class ControlError(ValueError):
    """A control message the server will not act on; the text goes back to the client."""


@dataclass(frozen=True, eq=False)
class Shapes:
    """A stream's zones and lines, validated; equal when their wire forms are."""

    zones: tuple[Zone, ...] = ()
    lines: tuple[Line, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.zones and not self.lines

    def to_dict(self, class_names: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
        return {"zones": [z.to_dict(class_names) for z in self.zones],
                "lines": [ln.to_dict(class_names) for ln in self.lines]}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Shapes):
            return NotImplemented
        return self is other or self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))


NO_SHAPES = Shapes()

#: Webhooks one stream may have, and the longest URL and secret.
MAX_STREAM_WEBHOOKS = 4
MAX_WEBHOOK_URL = 2048
MAX_WEBHOOK_SECRET = 256


@dataclass(frozen=True)
class StreamWebhook:
    """A receiver of this stream's events (besides the server's ``RTC_WEBHOOK_URLS``). The
    URL is checked here for its shape only; the event outputs apply the SSRF rules (when it
    is set, and at every connection)."""

    url: str
    secret: str | None = field(default=None, repr=False)

    def shown(self) -> dict[str, Any]:
        """As settings are stated (config ack, ``GET /sessions``): no secret, no userinfo or
        query (they may hold credentials)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return {"url": f"{parts.scheme}://{host}{port}{parts.path}", "signed": self.secret is not None}


def parse_webhooks(raw: Any) -> tuple[StreamWebhook, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_STREAM_WEBHOOKS:
        raise ControlError(f"webhooks must be null or a list of at most {MAX_STREAM_WEBHOOKS} "
                           "{\"url\", \"secret\"?} objects")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"url", "secret"}:
            raise ControlError(f"webhooks[{i}]: an object with \"url\" and optionally \"secret\"")
        url, secret = item.get("url"), item.get("secret")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > MAX_WEBHOOK_URL:
            raise ControlError(f"webhooks[{i}]: \"url\" must be an http:// or https:// URL of at most "
                               f"{MAX_WEBHOOK_URL} characters")
        if secret is not None and (not isinstance(secret, str) or not secret or len(secret) > MAX_WEBHOOK_SECRET):
            raise ControlError(f"webhooks[{i}]: \"secret\" must be a non-empty string of at most "
                               f"{MAX_WEBHOOK_SECRET} characters")
        try:
            urlsplit(url).port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise ControlError(f"webhooks[{i}]: the URL does not parse: {exc}") from exc
        out.append(StreamWebhook(url, secret))
    return tuple(out)


@dataclass(frozen=True)
class StreamSettings:
    thresholds: Thresholds
    #: A model of the server's catalog; None: the server's default model.
    model: str | None = None
    #: At most this many detections per second for this stream; None: as many as it gets.
    max_fps: float | None = None
    #: Track identities across frames (``track_id`` on every detection); on by default.
    tracking: bool = True
    #: Zones and lines counted on the tracks (events, ``counts``); only while tracking.
    shapes: Shapes = field(default=NO_SHAPES)
    #: Receivers of this stream's events (webhooks), beside the server's own.
    webhooks: tuple[StreamWebhook, ...] = ()


@dataclass(frozen=True)
class Ping:
    t: Any


@dataclass(frozen=True)
class Report:
    """A client's own measurement of its stream, e.g. the page's frame-matched end-to-end
    latency (only the sender can match a frame's send time to its detections); shown in
    ``GET /sessions``. Not answered."""

    e2e_ms: float


@dataclass(frozen=True)
class Config:
    settings: StreamSettings

    @property
    def thresholds(self) -> Thresholds:
        return self.settings.thresholds

    def ack(self, model: str, class_names: Sequence[str] = ()) -> dict[str, Any]:
        """The settings now in force, with the model's name and class names so that a client
        (the page's class filter) can offer them: a bare ``{"type": "config"}`` is a query."""
        th = self.thresholds
        return {"type": "config", "conf": th.conf, "iou": th.iou,
                "classes": sorted(th.classes) if th.classes else None, "model": model,
                "max_fps": self.settings.max_fps, "tracking": self.settings.tracking,
                **self.settings.shapes.to_dict(class_names),
                "webhooks": [w.shown() for w in self.settings.webhooks], "class_names": list(class_names)}


#: The class names of a model (None: the server's default), for the ``classes`` of zones
#: and lines; None where they are not known yet (configuration read before models load).
ClassesOf = Callable[[str | None], Sequence[str]]


def parse_control(raw: Any, current: StreamSettings, models: Sequence[str] = (),
                  classes_of: ClassesOf | None = None) -> Ping | Config | Report:
    """Decode one control message; ``current`` is the stream's settings now, ``models`` the
    names a ``config`` message may choose from."""
    if not isinstance(raw, str):
        raise ControlError("control messages are JSON text, not binary")
    if len(raw) > MAX_CONTROL_BYTES:
        raise ControlError(f"a control message is at most {MAX_CONTROL_BYTES} characters")
    try:
        message = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ControlError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ControlError("a control message must be a JSON object")
    kind = message.get("type")
    if kind == "ping":
        t = message.get("t")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float, str))):
            raise ControlError("ping 't' must be a number or a string")
        return Ping(t)
    if kind == "config":
        return Config(apply_config(current, message, models, classes_of))
    if kind == "report":
        return parse_report(message)
    raise ControlError(f"unknown message type {kind!r}; expected 'config', 'ping' or 'report'")


#: The largest end-to-end latency a client may report, in ms.
MAX_REPORTED_MS = 600_000.0


def parse_report(message: dict[str, Any]) -> Report:
    extra = set(message) - {"type", "e2e_ms"}
    if extra:
        raise ControlError(f"unknown fields {sorted(extra)}")
    value = message.get("e2e_ms")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= MAX_REPORTED_MS:
        raise ControlError(f"report 'e2e_ms' must be a number in [0, {MAX_REPORTED_MS:g}]")
    return Report(float(value))


SETTING_FIELDS = ("conf", "iou", "classes", "model", "max_fps", "tracking", "zones", "lines", "webhooks")


def apply_config(current: StreamSettings, message: dict[str, Any], models: Sequence[str] = (),
                 classes_of: ClassesOf | None = None) -> StreamSettings:
    """Validate a ``config`` control message and return the new settings.

    ``classes_of`` gives the class names the ``classes`` of zones and lines are checked
    against (those of the model in force after this message); without it they are not
    checked here (and the shapes returned count every class): the caller checks them again
    when the model is known."""
    allowed = {"type", *SETTING_FIELDS}
    extra = set(message) - allowed
    if extra:
        raise ControlError(f"unknown fields {sorted(extra)}")
    updates: dict[str, Any] = {}
    for name in ("conf", "iou"):
        if name in message:
            value = message[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ControlError(f"{name} must be a number in [0, 1]")
            updates[name] = float(value)
    if "classes" in message:
        classes = message["classes"]
        if classes is None:
            updates["classes"] = None
        elif isinstance(classes, list) and len(classes) <= MAX_CLASS_ID and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < MAX_CLASS_ID for c in classes
        ):
            updates["classes"] = frozenset(classes)
        else:
            raise ControlError(f"classes must be null or a list of class ids in [0, {MAX_CLASS_ID})")
    settings = replace(current, thresholds=replace(current.thresholds, **updates))
    if "model" in message:
        model = message["model"]
        if model is not None and (not isinstance(model, str) or model not in models):
            raise ControlError(f"model must be one of {', '.join(models) or '(none)'}, or null for the default")
        settings = replace(settings, model=model)
    if "max_fps" in message:
        fps = message["max_fps"]
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))
                                or not 0.0 < fps <= MAX_FPS):
            raise ControlError(f"max_fps must be null or a number in (0, {MAX_FPS:g}]")
        settings = replace(settings, max_fps=None if fps is None else float(fps))
    if "tracking" in message:
        if not isinstance(message["tracking"], bool):
            raise ControlError("tracking must be true or false")
        settings = replace(settings, tracking=message["tracking"])
    if "webhooks" in message:
        settings = replace(settings, webhooks=parse_webhooks(message["webhooks"]))
    if "zones" in message or "lines" in message:
        settings = replace(settings, shapes=parse_shapes(message, settings.shapes,
                                                         None if classes_of is None else classes_of(settings.model)))
    return settings


def parse_shapes(message: dict[str, Any], current: Shapes = NO_SHAPES,
                 class_names: Sequence[str] | None = None) -> Shapes:
    """``zones`` and/or ``lines`` of a message (a field left out keeps ``current``'s);
    ``class_names`` None: their ``classes`` are not checked (nor kept)."""
    def unchecked(raw: Any) -> Any:
        if isinstance(raw, list):
            return [{k: v for k, v in item.items() if k != "classes"} if isinstance(item, dict) else item
                    for item in raw]
        return raw

    names: Sequence[str] = () if class_names is None else class_names
    prep = unchecked if class_names is None else (lambda raw: raw)
    try:
        zones = parse_zones(prep(message["zones"]), names) if "zones" in message else current.zones
        lines = parse_lines(prep(message["lines"]), names) if "lines" in message else current.lines
    except GeometryError as exc:
        raise ControlError(str(exc)) from exc
    return Shapes(zones, lines)
