"""Validation of an ``/offer`` before any peer connection exists.

Everything a client can get wrong about an offer is found here, from the JSON shape to
the SDP's media sections, so a bad offer costs a parse and never a half-built
``RTCPeerConnection``. The SDP is parsed with aiortc's own parser (the one that would
parse it later); the codecs are checked against what aiortc can receive.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCRtpReceiver
from aiortc.sdp import SessionDescription

from rtc_server.streams.control import MAX_FPS

from .errors import ClientError

#: Stream settings an offer may carry as a ``config`` message would (issue 21), checked by
#: the route with ``apply_config`` once the model's class names are known.
ANALYTICS_FIELDS = ("tracking", "zones", "lines", "webhooks")
ALLOWED_FIELDS = frozenset({"sdp", "type", "session_id", "model", "max_fps", *ANALYTICS_FIELDS})


@dataclass(frozen=True)
class Offer:
    sdp: str
    #: Set when the client says the offer is for an existing session (renegotiation).
    session_id: str | None
    #: The model the session starts with (checked against the catalog by the route); None: the default.
    model: str | None = None
    #: Detections per second the client wants at most (None: as many as its share gives).
    max_fps: float | None = None
    #: ``tracking``, ``zones``, ``lines`` as given (the route validates them).
    analytics: Mapping[str, Any] = field(default_factory=dict)


def _bad(detail: str) -> ClientError:
    return ClientError(400, "bad_offer", detail)


def receivable_video_codecs() -> frozenset[str]:
    """Video codec names aiortc can decode, e.g. ``{"vp8", "h264"}`` (rtx is not a codec)."""
    capabilities = RTCRtpReceiver.getCapabilities("video")
    codecs = capabilities.codecs if capabilities is not None else []
    names = {c.mimeType.split("/", 1)[1].lower() for c in codecs}
    return frozenset(names - {"rtx", "red", "ulpfec"})


def parse_offer(body: dict[str, Any]) -> Offer:
    """Check the JSON fields and the SDP; raise ``ClientError`` (400) saying what is wrong."""
    extra = set(body) - ALLOWED_FIELDS
    if extra:
        raise _bad(f"unknown fields {sorted(extra)}; an offer has 'sdp', 'type' and optionally "
                   "'session_id', 'model', 'max_fps', 'tracking', 'zones', 'lines' and 'webhooks'")
    kind, sdp, session_id, model = body.get("type"), body.get("sdp"), body.get("session_id"), body.get("model")
    if kind != "offer":
        raise _bad(f"'type' must be \"offer\", not {kind!r}")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise _bad("'sdp' must be an SDP offer (text starting with v=0)")
    if session_id is not None and not isinstance(session_id, str):
        raise _bad("'session_id' must be a string")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a model name (a string; GET /models lists them) or null for the default")
    max_fps = body.get("max_fps")
    if max_fps is not None and (isinstance(max_fps, bool) or not isinstance(max_fps, (int, float))
                                or not 0.0 < max_fps <= MAX_FPS):
        raise _bad(f"'max_fps' must be null or a number in (0, {MAX_FPS:g}]")
    check_sdp(sdp)
    return Offer(sdp=sdp, session_id=session_id, model=model, max_fps=None if max_fps is None else float(max_fps),
                 analytics={k: body[k] for k in ANALYTICS_FIELDS if k in body})


def _unusable(detail: str, status: int) -> ClientError:
    return ClientError(status, "bad_offer" if status == 400 else "unsupported_offer", detail)


def check_sdp(sdp: str, unusable_status: int = 400) -> None:
    """One video section with a codec we can decode; audio and data sections may come along.

    An SDP that does not parse or lacks DTLS/ICE parameters is malformed: 400. One that is
    well-formed but asks for what this server cannot do (no video, two video tracks, no
    codec we decode) gets ``unusable_status``: 400 for ``/offer`` (its contract), 422 for
    WHIP, where RFC 9725 §4.4.2–4.4.3 allow "422 Unprocessable Content" or 400 and 422 tells the
    client that its SDP is fine as SDP but must carry other media.
    """
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises ValueError, KeyError, IndexError, ...
        raise _bad(f"the SDP does not parse: {type(exc).__name__}: {exc}") from exc
    video = [m for m in parsed.media if m.kind == "video"]
    if not video:
        kinds = sorted({m.kind for m in parsed.media}) or ["nothing"]
        raise _unusable(f"the offer has no video track (it carries {', '.join(kinds)}); send one camera track",
                        unusable_status)
    if len(video) > 1:
        raise _unusable(f"the offer has {len(video)} video tracks; send exactly one", unusable_status)
    for m in parsed.media:
        if m.kind not in ("audio", "video", "application"):
            continue
        if m.dtls is None or not m.dtls.fingerprints:
            raise _bad(f"the {m.kind} section has no DTLS fingerprint (a=fingerprint)")
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise _bad(f"the {m.kind} section has no ICE credentials (a=ice-ufrag / a=ice-pwd)")
    offered = {c.mimeType.split("/", 1)[-1].lower() for c in video[0].rtp.codecs}
    if not offered & receivable_video_codecs():
        raise _unusable(f"no supported video codec in the offer (offered {sorted(offered) or 'none'}; "
                        f"supported {sorted(receivable_video_codecs())})", unusable_status)
