"""A WebRTC peer as a stream's source and sink: everything that adapts aiortc to ``Stream``.

``answer_offer`` opens a stream in the registry, builds an ``RTCPeerConnection`` for it,
and answers the client's SDP offer (non-trickle: ICE fully gathered). From then on
``PeerSource`` owns the peer connection::

    track.recv() --reader task--> Stream.push()     (drained at decode speed, newest wins)
    "detections" data channel  <-- DataChannelSink  (a Stream sink; control messages in)
    connection failed/closed, track ended, no frames, never connected --> Stream.close_soon()

Closing the stream calls ``PeerSource.stop``: the track is stopped and the peer connection
closed. The stream knows none of this; the routes only call ``answer_offer``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..config import Settings
from ..engine.scheduler import VideoFrameLike
from ..logs import session_logger
from ..streams.control import StreamSettings
from ..streams.messages import encode
from ..streams.registry import StreamRegistry
from ..streams.stream import Stream
from .codec_preference import prefer_cheap_video_decoder
from .ice import advertise_address, filter_remote_candidates, rtc_configuration
from .turn import ice_servers

log = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "detections"
_ENDED_STATES = frozenset({"failed", "closed", "disconnected"})


class OfferError(ValueError):
    """The offer cannot be answered (e.g. it carries no video); a client error."""


class GatherTimeout(RuntimeError):
    """The server could not gather its ICE candidates in time (e.g. an unreachable TURN server)."""


class NoCandidates(RuntimeError):
    """The answer offers no ICE candidate at all (every port of ``RTC_UDP_PORTS`` taken, no
    TURN): the peer could never connect, so the offer is refused now, not 15 s later."""


@dataclass(frozen=True)
class PeerLimits:
    """How long a peer may take to connect and how long its track may stay silent."""

    #: Offer answered -> peer connected, in seconds; a peer that never connects is reaped.
    connect_timeout: float = 15.0
    #: Seconds without a video frame before the stream is reaped (a silent track).
    idle_timeout: float = 30.0

    @classmethod
    def of(cls, settings: Settings) -> PeerLimits:
        return cls(connect_timeout=settings.connect_timeout, idle_timeout=settings.idle_timeout)


class DataChannelSink:
    """The ``detections`` data channel as a stream sink; its messages are control input."""

    def __init__(self, stream: Stream, channel: RTCDataChannel) -> None:
        self._stream = stream
        self._channel = channel
        channel.on("message", self._on_message)

    def _on_message(self, raw: Any) -> None:
        reply = self._stream.control(raw)
        if reply is not None:
            self.send(reply)

    def send(self, message: dict[str, Any]) -> None:
        if self._channel.readyState == "open":
            self._channel.send(encode(message))

    def close(self) -> None:
        """Nothing to do: the channel closes with its peer connection."""


class PeerSource:
    """One aiortc peer connection feeding ``stream``."""

    def __init__(self, stream: Stream, pc: RTCPeerConnection, limits: PeerLimits, kind: str = "offer") -> None:
        self.kind = kind
        self.pc = pc
        self._stream = stream
        self._limits = limits
        self._track: MediaStreamTrack | None = None
        self.log = session_logger(log, stream.id)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)

    async def accept(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply the client's offer and return our answer (ICE fully gathered: non-trickle).

        aiortc's parser lets some malformed offers through (odd BUNDLE groups, sections
        without transports — found by the fuzz tests) and then fails on them deep inside
        with AttributeError & co. Everything here digests the client's SDP, so such a failure
        is answered as a bad offer (400); the traceback is logged at WARNING so that a real
        server fault would still be seen.
        """
        try:
            prefer_cheap_video_decoder(self.pc)  # before the offer: aiortc negotiates there
            await self.pc.setRemoteDescription(offer)
            if not any(t.kind == "video" and t.mid is not None for t in self.pc.getTransceivers()):
                raise OfferError("the offer has no video track")
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.direction = "recvonly"
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (OfferError, ValueError):
            raise
        except Exception as exc:
            self.log.warning("aiortc could not answer the offer: %s: %s", type(exc).__name__, exc, exc_info=True)
            raise OfferError(f"the offer cannot be answered: {type(exc).__name__}: {exc}") from exc
        return self.pc.localDescription

    def start_watchdog(self) -> None:
        """Reap the stream if its peer has not connected within ``connect_timeout``."""
        self._stream.spawn(self._watch_connect(), "watchdog")

    async def _watch_connect(self) -> None:
        await asyncio.sleep(self._limits.connect_timeout)
        if self.pc.connectionState != "connected" and not self._stream.closed:
            self.log.warning("peer did not connect within %.1f s (state %s); reaping",
                             self._limits.connect_timeout, self.pc.connectionState)
            self._stream.count_error("session_connect_timeout")
            self._stream.close_soon("connect timeout")

    # ----- peer connection events ---------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "video" or self._track is not None:
            return  # audio, or a second video track: not ours to process
        self._track = track
        self._stream.spawn(self._read_frames(track), "reader")
        self.log.info("receiving video")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == DATA_CHANNEL_LABEL:
            self._stream.add_sink(DataChannelSink(self._stream, channel))

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        self.log.info("connection %s", state)
        if state in _ENDED_STATES:
            self._stream.close_soon(f"connection {state}")

    async def _read_frames(self, track: MediaStreamTrack) -> None:
        """Drain the track at decode speed; the stream keeps only the newest frame."""
        try:
            while True:
                try:  # asyncio.timeout: no extra Task per frame, unlike wait_for on 3.11
                    async with asyncio.timeout(self._limits.idle_timeout):
                        frame = await track.recv()
                except TimeoutError:
                    self.log.warning("no video frame for %.1f s; reaping", self._limits.idle_timeout)
                    self._stream.count_error("session_idle_timeout")
                    self._stream.close_soon("no video")
                    return
                # A video track yields av.VideoFrame; PyAV's stub types to_ndarray's format as a
                # keyword, which VideoFrameLike (engine) does not spell the same way.
                self._stream.push(cast(VideoFrameLike, frame), frame.pts)
        except MediaStreamError:
            self.log.info("video track ended")
            self._stream.close_soon("track ended")

    async def stop(self) -> None:
        if self._track is not None:
            self._track.stop()
        await self.pc.close()


async def answer_offer(registry: StreamRegistry, settings: Settings, offer_sdp: str, kind: str = "offer",
                       stream_settings: StreamSettings | None = None) -> tuple[Stream, RTCSessionDescription]:
    """Answer an SDP offer with a new stream fed by a new peer. On failure nothing is left.

    ``stream_settings``: what the stream starts with (the model the offer named); None: the
    registry's defaults.

    Raises ``ServerFull`` (from the registry, before anything is built), ``GatherTimeout``
    when ICE gathering outlasts ``ice_gather_timeout``, ``NoCandidates`` when no local
    candidate could be gathered, ``OfferError``/``ValueError`` for offers aiortc cannot answer.
    The session's own TURN credential (``RTC_TURN_SECRET``) is made for it here.
    """
    stream = registry.open(kind, stream_settings)
    configuration = rtc_configuration(ice_servers(settings, stream.id))
    source = PeerSource(stream, RTCPeerConnection(configuration=configuration), PeerLimits.of(settings), kind)
    stream.attach(source)
    try:
        sdp = filter_remote_candidates(offer_sdp, settings.ice_addresses)
        async with asyncio.timeout(settings.ice_gather_timeout):
            answer = await source.accept(RTCSessionDescription(sdp=sdp, type="offer"))
        if settings.public_address:  # 1:1 NAT: tell the peer the public address
            answer = RTCSessionDescription(advertise_address(answer.sdp, settings.public_address), "answer")
        if "a=candidate:" not in answer.sdp:
            raise NoCandidates("no UDP port or relay is free for a new session (RTC_UDP_PORTS all taken?); "
                               "retry shortly")
    except TimeoutError as exc:
        await stream.close("ice gather timeout")
        raise GatherTimeout(f"ICE gathering took over {settings.ice_gather_timeout} s "
                            "(is a configured STUN/TURN server unreachable?)") from exc
    except NoCandidates:
        await stream.close("no candidates")
        raise
    except BaseException:
        await stream.close("bad offer")
        raise
    stream.start()
    source.start_watchdog()
    stream.log.info("answered (%d active)", len(registry))
    return stream, answer
