"""Release a received video frame on its RTP marker bit instead of one frame later.

aiortc's ``JitterBuffer`` hands a video frame to the decoder only when a packet of the
*next* frame arrives (it waits for the RTP timestamp to change), so every frame sits on
the server for one frame interval before it is even decoded: 33 ms at 30 fps, about as
long as the model. Yet the sender marks the last packet of each frame with the RTP
marker bit (VP8: RFC 7741 §4.1; H.264: RFC 6184 §5.1), so a frame whose packets, from its
first to the marked one, have all arrived is complete and can be decoded at once.

``MarkerReleaseJitterBuffer`` changes only that frame-assembly step. For video, when the
packets from the frame start to a marker packet are present, with consecutive sequence
numbers (16-bit wrap) and one timestamp, that frame is released now. The frame start is

* the packet right after the previously released frame (whichever rule released it), or
* a packet that says it starts a frame: VP8 payload descriptor S=1, PID=0; H.264 an
  access unit delimiter, an SPS, or a slice with ``first_mb_in_slice`` 0. Needed for the
  stream's first frame and after the buffer was reset: a frame released there by the stock
  rule comes out on the *next* frame's packet, and if that packet completes its own frame
  too, ``add()`` can hand over only one of the two; the stream would stay one frame behind
  until a frame spanning several packets lets it catch up.

Otherwise (no marker, a gap, reordering, unknown start) the stock rule runs unchanged, and
so do ``add()``'s contract ``(pli_flag, frame or None)`` and its PLI triggers (loss that
overflows the buffer, a far-misordered packet). The one-frame-per-packet limit remains
after a retransmission fills a gap behind complete frames: they drain one per packet.

Two more things the marker path must do that the stock rule got for free:

* Padding-only packets (empty payload, sent between frames for bandwidth probing) carry
  the previous frame's timestamp. The stock rule glues them to that frame; here that
  frame is already gone, so they would come out as an empty frame, and feeding FFmpeg
  ``b""`` puts the decoder into EOF for good (every later decode fails). They are skipped.
* After loss, a complete VP8 keyframe needs nothing older: it is released at once and
  the unfinishable frames before it are dropped, instead of waiting for the buffer to
  overflow.

Audio uses the same class (capacity 16, prefetch 4) and there the marker bit means
"talkspurt start", so audio always takes the stock path.

aiortc's receiver imports the class by name (``from .jitterbuffer import JitterBuffer``),
so ``use_marker_release(True)`` replaces ``aiortc.rtcrtpreceiver.JitterBuffer``; it must
run before any receiver exists (``create_app`` does it). Tested against aiortc 1.16.0 and
aioice 0.13.0, the versions ``setup.cfg`` pins; the class relies on ``JitterBuffer``'s
attributes ``_origin``, ``_packets``, ``_capacity``, ``_is_video`` and on ``packet._data``
(the depayloaded bytes the receiver sets before ``add()``), which is why those are pinned.
"""

from __future__ import annotations

import logging

import aiortc
import aiortc.jitterbuffer
import aiortc.rtcrtpreceiver
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

log = logging.getLogger(__name__)

#: The aiortc release this subclass was written and tested against (setup.cfg pins it).
TESTED_AIORTC = "1.16.0"

#: The class aiortc ships, restored by ``use_marker_release(False)``.
STOCK_JITTER_BUFFER: type[JitterBuffer] = aiortc.jitterbuffer.JitterBuffer


class ReleaseCounts:
    """How many video frames each rule released, process-wide (for tests and metrics)."""

    def __init__(self) -> None:
        self.marker = 0
        self.stock = 0
        self.keyframe_resync = 0
        self.padding_skipped = 0


COUNTS = ReleaseCounts()


def release_counts() -> dict[str, int]:
    """``COUNTS`` as ``{rule: frames}`` (``padding_skipped`` counts packets), for /metrics."""
    return dict(vars(COUNTS))


def _data(packet: RtpPacket) -> bytes:
    """The depayloaded bytes aiortc's receiver attached before ``add()``."""
    return getattr(packet, "_data", packet.payload)


def is_vp8_frame_start(packet: RtpPacket) -> bool:
    """True if ``packet`` is the first packet of a VP8 frame (descriptor S=1, PID=0).

    The buffer does not know the codec, so the descriptor is parsed and the packet counts
    as VP8 only if the bytes after the descriptor are exactly what the receiver's
    depayloader produced. H.264 never matches: its depayloaded frame starts with an Annex B
    start code that a NAL unit's body cannot contain, and FU-A continuations would need
    the forbidden F bit set to parse with a descriptor of the right length.
    """
    try:
        descriptor, rest = VpxPayloadDescriptor.parse(packet.payload)
    except ValueError:
        return False
    return (descriptor.partition_start == 1 and descriptor.partition_id == 0
            and len(rest) > 0 and rest == _data(packet))


def _depayloaded_as_vp8(packet: RtpPacket) -> bool:
    try:
        _, rest = VpxPayloadDescriptor.parse(packet.payload)
    except ValueError:
        return False
    return rest == _data(packet)


#: NAL unit types that begin an access unit (RFC 6184 / H.264 §7.4.1.2.3): an access unit
#: delimiter or a sequence parameter set can only come before the first slice of a picture.
_H264_AU_OPENERS = frozenset({7, 9})
_H264_SLICES = frozenset({1, 5})


def is_h264_frame_start(packet: RtpPacket) -> bool:
    """True if ``packet`` starts an H.264 access unit.

    aiortc's H.264 depayloader turns the start of every NAL unit (single, STAP-A, first
    FU-A fragment) into an Annex B start code; a NAL body never contains one. The unit
    opens a picture if it is an AUD or SPS, or a slice whose ``first_mb_in_slice`` is 0
    (the slice header's first Exp-Golomb code is the single bit 1).
    """
    data = _data(packet)
    if len(data) < 6 or data[:4] != b"\x00\x00\x00\x01" or _depayloaded_as_vp8(packet):
        return False
    nal_type = data[4] & 0x1F
    return nal_type in _H264_AU_OPENERS or (nal_type in _H264_SLICES and bool(data[5] & 0x80))


def is_frame_start(packet: RtpPacket) -> bool:
    return is_vp8_frame_start(packet) or is_h264_frame_start(packet)


def is_vp8_keyframe_start(packet: RtpPacket) -> bool:
    """A VP8 frame start whose payload header says keyframe (P bit 0, RFC 6386 §9.1)."""
    data = _data(packet)
    return is_vp8_frame_start(packet) and len(data) >= 6 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a"


class MarkerReleaseJitterBuffer(JitterBuffer):
    """aiortc's ``JitterBuffer`` that releases complete video frames on the marker bit."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        #: Sequence number right after the last released frame: a known frame start.
        self._next_start: int | None = None

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if not self._is_video:
            return super()._remove_frame(sequence_number)
        self._skip_padding()
        frame = self._release_marked(sequence_number)
        if frame is None:
            frame = super()._remove_frame(sequence_number)
            if frame is not None:
                COUNTS.stock += 1
        if frame is not None:
            self._next_start = self._origin
        return frame

    def _slot(self, sequence_number: int) -> RtpPacket | None:
        return self._packets[sequence_number % self._capacity]

    def _skip_padding(self) -> None:
        """Drop padding-only packets waiting at the head (they belong to a released frame)."""
        while self._origin is not None:
            packet = self._slot(self._origin)
            if packet is None or packet.payload:
                return
            self.remove(1)
            COUNTS.padding_skipped += 1
            if self._next_start is not None and uint16_add(self._next_start, 1) == self._origin:
                self._next_start = self._origin

    def _release_marked(self, sequence_number: int) -> JitterFrame | None:
        assert self._origin is not None
        first = self._slot(self._origin)
        if first is not None and (self._origin == self._next_start or is_frame_start(first)):
            frame = self._take_frame(self._origin)
            if frame is not None:
                COUNTS.marker += 1
                return frame
        # the head frame is stuck (a gap, or no known start): a complete keyframe behind it
        # makes it worthless
        return self._resync_on_keyframe(sequence_number)

    def _take_frame(self, start: int) -> JitterFrame | None:
        """Remove and return the frame starting at ``start`` (== origin) if it is complete."""
        first = self._slot(start)
        assert first is not None
        packets: list[RtpPacket] = []
        for count in range(self._capacity):
            packet = self._slot(uint16_add(start, count))
            if packet is None or packet.timestamp != first.timestamp:
                return None  # a gap, or the timestamp changed without a marker: stock rule
            packets.append(packet)
            if packet.marker:
                data = b"".join(_data(p) for p in packets)
                self.remove(count + 1)
                if not data:
                    return None  # nothing to decode; b"" would kill the decoder
                return JitterFrame(data=data, timestamp=first.timestamp)
        return None

    def _resync_on_keyframe(self, sequence_number: int) -> JitterFrame | None:
        """After loss at the head: if ``sequence_number`` completed a VP8 keyframe, jump to it.

        (VP8 only: an H.264 IDR picture may depend on parameter sets sent before it.)
        """
        marked = self._slot(sequence_number)
        if marked is None or not marked.marker:
            return None
        start = sequence_number
        while start != self._origin:  # walk back through this frame, never past the head
            previous = self._slot(uint16_add(start, -1))
            if previous is None or previous.timestamp != marked.timestamp:
                break
            start = uint16_add(start, -1)
        head = self._slot(start)
        if head is None or head.timestamp != marked.timestamp or not is_vp8_keyframe_start(head):
            return None
        assert self._origin is not None  # a slot was found, so the buffer has an origin
        self.remove(uint16_add(start, -self._origin))  # the unfinishable frames before it
        frame = self._take_frame(start)
        if frame is not None:
            COUNTS.keyframe_resync += 1
        return frame


def use_marker_release(enabled: bool) -> None:
    """Make receivers created from now on use the marker rule (or aiortc's stock rule).

    Process-wide, like aiortc's own module attribute; receivers that already exist keep
    the buffer they were built with.
    """
    if enabled and aiortc.__version__ != TESTED_AIORTC:
        log.warning("marker release was tested with aiortc %s, this is %s: it relies on JitterBuffer "
                    "internals; set RTC_MARKER_RELEASE=off if video misbehaves", TESTED_AIORTC, aiortc.__version__)
    aiortc.rtcrtpreceiver.JitterBuffer = MarkerReleaseJitterBuffer if enabled else STOCK_JITTER_BUFFER  # type: ignore[misc]


def marker_release_active() -> bool:
    return aiortc.rtcrtpreceiver.JitterBuffer is MarkerReleaseJitterBuffer
