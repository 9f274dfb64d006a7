"""Caps on what a pull source's bytes may make the server hold: the decoded frame's size,
an HLS playlist's bytes and segment count.

A pull URL comes from a client, and so does everything its server sends: a playlist that
never ends, a video of 8192x8192 frames. Without caps these cost memory and CPU the
client does not pay for. Each cap is checked in the source's reader thread, on what was
actually received (the decoded frame, the bytes of the playlist), and a source over a cap
is refused with an error that names the cap and its setting.

``check_frame_size`` lives in ``engine/frames.py``: the stream core applies the same cap to
every source's decoded frames (WebRTC, WHIP and pull alike), before any RGB conversion or
snapshot; the pull reader also checks it early, in its own thread, to refuse at open.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.frames import DEFAULT_MAX_FRAME_PIXELS

#: A live playlist is a few KiB, a day-long VOD playlist of 2 s segments about 4 MiB.
DEFAULT_MAX_PLAYLIST_BYTES = 4 * 1024 * 1024
#: Segment (and variant) URIs in one playlist: 24 h of 2 s segments with room to spare.
DEFAULT_MAX_SEGMENTS = 50_000


class InputRefused(Exception):
    """What the source sent is over a cap; retrying would get the same. ``kind`` labels it
    in ``rtc_pull_open_failures_total``."""

    kind = "too_large"


class FrameTooLarge(InputRefused):
    """A decoded frame has more pixels than ``max_frame_pixels``."""


class PlaylistTooLarge(InputRefused):
    """An HLS playlist is over ``max_playlist_bytes`` or ``max_segments``."""


@dataclass(frozen=True)
class InputCaps:
    """The caps of one pull source (mapped from ``RTC_MAX_FRAME_PIXELS``,
    ``RTC_SOURCE_MAX_PLAYLIST_BYTES``, ``RTC_SOURCE_MAX_SEGMENTS`` by the composition root)."""

    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    max_playlist_bytes: int = DEFAULT_MAX_PLAYLIST_BYTES
    max_segments: int = DEFAULT_MAX_SEGMENTS


class PlaylistMeter:
    """Counts one HLS playlist's bytes and URI lines as they arrive; raises ``PlaylistTooLarge``
    past a cap. Fed only bytes not seen before (a re-read after a seek is not counted twice)."""

    def __init__(self, caps: InputCaps, shown_url: str) -> None:
        self._caps = caps
        self._url = shown_url
        self.bytes = 0
        self.segments = 0
        self._partial = b""

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        if self.bytes > self._caps.max_playlist_bytes:
            raise PlaylistTooLarge(
                f"the HLS playlist {self._url} is over {self._caps.max_playlist_bytes} bytes "
                "(RTC_SOURCE_MAX_PLAYLIST_BYTES)")
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self.segments += sum(1 for line in lines if line.strip() and not line.lstrip().startswith(b"#"))
        if self.segments > self._caps.max_segments:
            raise PlaylistTooLarge(
                f"the HLS playlist {self._url} lists more than {self._caps.max_segments} segments "
                "(RTC_SOURCE_MAX_SEGMENTS)")


def is_playlist(head: bytes) -> bool:
    """Whether a resource's first bytes are an HLS playlist's (``#EXTM3U``, maybe after a BOM)."""
    return head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n").startswith(b"#EXTM3U")
