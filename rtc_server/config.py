"""Server settings: one frozen dataclass, filled from command-line flags and environment.

Every flag has an environment variable (``RTC_<NAME>``) so that containers and Cloud Run
can configure the server without a command line; Cloud Run's own ``PORT`` is honoured
too. Precedence: flag > ``RTC_*`` variable > ``PORT`` (port only) > default.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEFAULT_MODEL = Path("models/yolo11n.onnx")


class ConfigError(ValueError):
    """A setting has a value the server cannot use; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Everything the server can be told. Field names match the ``RTC_*`` variables."""

    host: str = "127.0.0.1"
    port: int = 8080
    model: Path = DEFAULT_MODEL
    #: Confidence threshold on the best class score (Ultralytics' ``conf``).
    conf: float = 0.25
    #: IoU threshold of the class-aware NMS (Ultralytics' ``iou``).
    iou: float = 0.7
    max_det: int = 300
    #: Long side of the model input; the short side is padded to a multiple of 32.
    imgsz: int = 640
    #: "rect" (minimal padding, the Ultralytics predict default) or "square" (imgsz x imgsz).
    letterbox: str = "rect"
    #: onnxruntime intra-op threads; 0 lets onnxruntime choose (one per core).
    threads: int = 0
    #: RTCIceServer dicts, e.g. ``[{"urls": "turn:turn.example:443", ...}]``. Empty by
    #: default so the server never contacts a public STUN server unless told to.
    ice_servers: tuple[dict[str, Any], ...] = ()
    #: Local addresses to offer host candidates on; empty means aioice's own choice.
    ice_addresses: tuple[str, ...] = ()
    #: Inclusive UDP port range for host candidates, e.g. ``(40000, 40100)``; None: any port.
    udp_ports: tuple[int, int] | None = None
    #: Address to advertise instead of the local one in host candidates (1:1 NAT: a GCE
    #: VM's external IP); empty: advertise the local addresses as they are.
    public_address: str = ""
    #: Release each received video frame on its RTP marker bit (rtc_server/marker_release.py)
    #: instead of when the next frame starts: one frame interval less latency.
    marker_release: bool = True
    static_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent / "static")
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not in 1..65535")
        if not 0.0 <= self.conf <= 1.0:
            raise ConfigError(f"conf {self.conf} is not in [0, 1]")
        if not 0.0 <= self.iou <= 1.0:
            raise ConfigError(f"iou {self.iou} is not in [0, 1]")
        if self.imgsz <= 0 or self.imgsz % 32:
            raise ConfigError(f"imgsz {self.imgsz} is not a positive multiple of 32")
        if self.letterbox not in ("rect", "square"):
            raise ConfigError(f"letterbox {self.letterbox!r} is not 'rect' or 'square'")
        if self.max_det <= 0:
            raise ConfigError(f"max_det {self.max_det} must be positive")
        if self.threads < 0:
            raise ConfigError(f"threads {self.threads} must be >= 0")
        if self.udp_ports is not None and not 1024 <= self.udp_ports[0] <= self.udp_ports[1] <= 65535:
            raise ConfigError(f"udp_ports {self.udp_ports} is not a range within 1024..65535")
        if self.public_address:
            try:
                ipaddress.ip_address(self.public_address)
            except ValueError as exc:
                raise ConfigError(f"public_address {self.public_address!r} is not an IP address") from exc


def _parse_ice_servers(text: str) -> tuple[dict[str, Any], ...]:
    try:
        value = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as exc:
        raise ConfigError(f"RTC_ICE_SERVERS is not JSON: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(s, dict) and "urls" in s for s in value):
        raise ConfigError("RTC_ICE_SERVERS must be a JSON list of objects with 'urls'")
    return tuple(value)


def _parse_udp_ports(text: str) -> tuple[int, int] | None:
    """``"40000-40100"`` -> ``(40000, 40100)`` (inclusive, range checked by Settings); "" -> None."""
    low, sep, high = text.strip().partition("-")
    if not low:
        return None
    try:
        return int(low), int(high if sep else low)
    except ValueError as exc:
        raise ConfigError(f"RTC_UDP_PORTS={text!r} is not a port range like 40000-40100") from exc
def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{text!r} is not one of 1/0, true/false, on/off, yes/no")


def _parse_addresses(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


#: name -> (converter from text, help). The order is the order of --help.
_OPTIONS: dict[str, tuple[Any, str]] = {
    "host": (str, "address to serve HTTP on"),
    "port": (int, "port to serve HTTP on (PORT is honoured as Cloud Run sets it)"),
    "model": (Path, "YOLO11 ONNX model file"),
    "conf": (float, "confidence threshold"),
    "iou": (float, "NMS IoU threshold"),
    "max_det": (int, "maximum detections per frame"),
    "imgsz": (int, "model input long side (multiple of 32)"),
    "letterbox": (str, "'rect' (minimal padding) or 'square'"),
    "threads": (int, "onnxruntime intra-op threads (0: one per core)"),
    "ice_servers": (_parse_ice_servers, "JSON list of RTCIceServer dicts (default: none)"),
    "ice_addresses": (_parse_addresses, "comma-separated local addresses for host candidates"),
    "udp_ports": (_parse_udp_ports, "UDP port range for host candidates, e.g. 40000-40100 (default: any)"),
    "public_address": (str, "address advertised in host candidates instead of the local one (1:1 NAT)"),
    "marker_release": (_parse_bool, "release video frames on the RTP marker bit (on/off)"),
    "static_dir": (Path, "folder of the web page"),
    "log_level": (str, "DEBUG, INFO, WARNING or ERROR"),
}


def env_name(name: str) -> str:
    return "RTC_" + name.upper()


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``argv`` (flags) over ``env`` (``RTC_*`` variables) over defaults."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="rtc-server",
        description="Real-time YOLO11 object detection over WebRTC.",
    )
    for name, (_, help_text) in _OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{help_text} [env {env_name(name)}]",
        )
    args = parser.parse_args(argv)

    values: dict[str, Any] = {}
    if env.get("PORT"):
        values["port"] = env["PORT"]
    for name in _OPTIONS:
        if env.get(env_name(name)):
            values[name] = env[env_name(name)]
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return settings_from_text(values)


def settings_from_text(values: Mapping[str, Any]) -> Settings:
    """Convert textual values (from flags or env) and validate them."""
    known = {f.name for f in fields(Settings)}
    converted: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        convert = _OPTIONS[name][0]
        try:
            converted[name] = convert(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise ConfigError(f"{env_name(name)}={raw!r}: {exc}") from exc
    return Settings(**converted)
