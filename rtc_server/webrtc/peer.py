"""A WebRTC peer as a stream's source and sink: everything that adapts aiortc to ``Stream``.

``answer_offer`` opens a stream in the registry, builds an ``RTCPeerConnection`` for it,
and answers the client's SDP offer (non-trickle: ICE fully gathered). From then on
``PeerSource`` owns the peer connection::

    track.recv() --reader task--> Stream.push()     (drained at decode speed, newest wins)
    audio (any non-video track) --> declined or drained (see ``AudioPolicy``), never queued
    "detections" data channel  <-- DataChannelSink  (a Stream sink; control messages in;
                                                     skips rather than queue when congested)
    connection failed/closed, track ended, no frames, never connected --> Stream.close_soon()

Closing the stream calls ``PeerSource.stop``: the track is stopped and the peer connection
closed. The stream knows none of this; the routes only call ``answer_offer``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from ..addresses import AddressPolicy
from ..engine.frames import VideoFrameLike
from ..logs import session_logger
from ..streams.control import StreamSettings
from ..streams.messages import encode
from ..streams.registry import StreamRegistry
from ..streams.stream import Stream
from .candidates import DEFAULT_MAX_REMOTE_CANDIDATES, RemoteCandidates
from .codec_preference import prefer_cheap_video_decoder
from .ice import advertise_address, rtc_configuration
from .trickle import IceFragment, remote_ice_credentials
from .turn import IceServerConfig, ice_servers

log = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "detections"
_ENDED_STATES = frozenset({"failed", "closed", "disconnected"})


class OfferError(ValueError):
    """The offer cannot be answered (e.g. it carries no video); a client error."""


class NoVideo(OfferError):
    """A well-formed offer without a video section this server can receive (WHIP: 422)."""


class IceRestartUnsupported(ValueError):
    """A trickle fragment with new ICE credentials: an ICE restart, which aiortc cannot do."""


class GatherTimeout(RuntimeError):
    """The server could not gather its ICE candidates in time (e.g. an unreachable TURN server)."""


class NoRemoteCandidates(OfferError):
    """The offer says ``a=end-of-candidates`` but leaves no candidate to connect to (none
    sent, or every one dropped): no trickle can follow, so the peer could never connect."""


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


@dataclass(frozen=True)
class PeerConfig:
    """What ``answer_offer`` needs to build a peer: its limits and its ICE (set by the
    composition root from ``RTC_*`` settings; the peer never sees the rest)."""

    limits: PeerLimits = field(default_factory=PeerLimits)
    #: Seconds the server may spend gathering its ICE candidates for one answer.
    ice_gather_timeout: float = 10.0
    #: Local addresses host candidates are offered on (empty: aioice's choice); remote
    #: candidates are filtered to the same families.
    ice_addresses: tuple[str, ...] = ()
    #: Address advertised instead of the local one (1:1 NAT); empty: as they are.
    public_address: str = ""
    #: STUN/TURN servers, with a TURN credential made per session.
    ice_servers: IceServerConfig = field(default_factory=IceServerConfig)
    #: Which remote candidates' addresses the server may send STUN checks to: public ones,
    #: plus ``RTC_ICE_ALLOW_NETWORKS`` (the pull sources' rule, ``rtc_server/addresses.py``).
    candidate_policy: AddressPolicy = field(default_factory=AddressPolicy)
    #: Remote candidates per session at most, offer and trickle together.
    max_remote_candidates: int = DEFAULT_MAX_REMOTE_CANDIDATES
    #: Only this machine's users reach the server (loopback, no proxy, no public name):
    #: their private, loopback and mDNS candidates are kept (``candidates.py``).
    trust_local_candidates: bool = False

    def remote_candidates(self) -> RemoteCandidates:
        """A new session's remote-candidate guard (``candidates.py``)."""
        return RemoteCandidates(self.candidate_policy, self.ice_addresses, self.max_remote_candidates,
                                trust_local=self.trust_local_candidates)


#: Bytes a data channel may hold unsent before the sink skips messages: about four typical
#: detection messages (130 ms at 30 fps). aiortc hands SCTP one message at a time and keeps
#: the rest in its own unbounded queue, counted by ``bufferedAmount``; on a healthy link that
#: is 0 by the time the next frame is done, so anything above this is congestion (a slow or
#: lossy path, a peer that stopped acknowledging) and a queued result would only arrive late.
MAX_BUFFERED_BYTES = 8 * 1024


class DataChannelSink:
    """The ``detections`` data channel as a stream sink; its messages are control input.

    ``send`` never queues behind a congested channel: while more than ``max_buffered``
    bytes wait unsent, a message is skipped and counted (``skipped``, and
    ``rtc_sink_messages_skipped_total{sink="datachannel"}``). The page opens the channel
    unordered with no retransmissions, so SCTP itself never holds back a newer message for
    a lost older one either.
    """

    name = "datachannel"

    def __init__(self, stream: Stream, channel: RTCDataChannel, max_buffered: int = MAX_BUFFERED_BYTES) -> None:
        self._stream = stream
        self._channel = channel
        self._max_buffered = max_buffered
        #: Messages skipped because the channel was congested.
        self.skipped = 0
        channel.on("message", self._on_message)

    @property
    def channel(self) -> RTCDataChannel:
        return self._channel

    def _on_message(self, raw: Any) -> None:
        reply = self._stream.control(raw, origin=self)
        if reply is not None:
            self.send(reply)

    def send(self, message: dict[str, Any]) -> None:
        if self._channel.readyState != "open":
            return
        if self._channel.bufferedAmount > self._max_buffered:
            self.skipped += 1
            self._stream.count_skipped(self.name)
            if self.skipped == 1:
                self._stream.log.info("data channel congested (%d bytes unsent): skipping messages",
                                      self._channel.bufferedAmount)
            return
        self._channel.send(encode(message))

    def close(self) -> None:
        """Nothing to do: the channel closes with its peer connection."""


class AudioPolicy(enum.Enum):
    """What happens to audio (any non-video track): it must never pile up.

    aiortc decodes every received track into an unbounded queue; nobody reads audio here,
    so without a policy it grows for as long as the session lives (measured: +52 MB in
    45 s for Opus + video). ``python -m bench.experiments.audio_memory`` compares the choices (docs/benchmarks.md).
    """

    #: Answer the audio section ``inactive``: the sender stops sending it and aiortc starts
    #: no receiver (no decoder thread, no queue). Used for ``/offer``, our own protocol.
    DECLINE = "decline"
    #: Answer ``recvonly`` (RFC 9725 requires it of a WHIP endpoint) and read the track to
    #: its end, discarding every frame: aiortc's queue stays empty.
    DRAIN = "drain"


#: The policy per source kind (``answer_offer``'s ``kind``).
AUDIO_POLICY: dict[str, AudioPolicy] = {"offer": AudioPolicy.DECLINE, "whip": AudioPolicy.DRAIN}


class PeerSource:
    """One aiortc peer connection feeding ``stream``."""

    def __init__(self, stream: Stream, pc: RTCPeerConnection, limits: PeerLimits, kind: str = "offer",
                 audio: AudioPolicy = AudioPolicy.DECLINE, candidates: RemoteCandidates | None = None) -> None:
        self.kind = kind
        self.pc = pc
        self.audio = audio
        self._stream = stream
        self._limits = limits
        #: The session's remote candidates: which may be used, how many have come.
        self.candidates = candidates or RemoteCandidates(AddressPolicy())
        self._track: MediaStreamTrack | None = None
        #: Non-video tracks being drained (``AudioPolicy.DRAIN``), for tests and logs.
        self.drained: list[MediaStreamTrack] = []
        #: The ``detections`` data channel's sink, once the peer has opened one.
        self.sink: DataChannelSink | None = None
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
                raise NoVideo("the offer has no video track this server can receive")
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind == "video":
                    transceiver.direction = "recvonly"
                elif self.audio is AudioPolicy.DECLINE:
                    transceiver.direction = "inactive"  # no receiver, no decoder: nothing to pile up
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
            # audio (or a second video track): not ours to process, never to pile up
            if self.audio is AudioPolicy.DRAIN:
                self.drained.append(track)
                self._stream.spawn(self._drain(track), f"drain-{track.kind}")
            return
        self._track = track
        self._stream.spawn(self._read_frames(track), "reader")
        self.log.info("receiving video")

    @staticmethod
    async def _drain(track: MediaStreamTrack) -> None:
        """Read a track we do not use to its end, dropping every frame (its queue stays empty)."""
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label == DATA_CHANNEL_LABEL and self.sink is None:
            self.sink = DataChannelSink(self._stream, channel)
            self._stream.add_sink(self.sink)

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

    # ----- trickle ICE (WHIP PATCH) ----------------------------------------------------------
    async def add_remote_ice(self, fragment: IceFragment) -> int:
        """Add a trickled fragment's candidates (and end-of-candidates); returns how many.

        Candidates the session may not use (``candidates.py``: forbidden ranges, mDNS names,
        unreachable from loopback) are dropped silently, as RFC 9725 asks for candidates a
        session cannot use. Raises ``IceRestartUnsupported`` when the fragment's ICE
        credentials are not the session's, ``TooManyCandidates`` (nothing added) when the
        fragment would take the session over its cap.
        """
        remote = self.pc.remoteDescription
        current = remote_ice_credentials(remote.sdp) if remote is not None else None
        if fragment.ufrag is not None and current is not None and (fragment.ufrag, fragment.pwd) != current:
            raise IceRestartUnsupported("new ICE credentials: an ICE restart, which this server does not support")
        self.candidates.admit(len(fragment.candidates))
        added = 0
        for mid, text in fragment.candidates:
            if not self.candidates.keep(text):
                continue
            candidate = candidate_from_sdp(text)
            candidate.sdpMid = mid
            if mid is None:
                candidate.sdpMLineIndex = 0  # the BUNDLE-tagged section (RFC 9725 §4.3.2)
            await self.pc.addIceCandidate(candidate)
            added += 1
        if fragment.end_of_candidates:
            await self.pc.addIceCandidate(None)
        self.log.info("trickle: %d of %d candidates added%s", added, len(fragment.candidates),
                      ", end of candidates" if fragment.end_of_candidates else "")
        return added

    async def stop(self) -> None:
        if self._track is not None:
            self._track.stop()
        await self.pc.close()


async def answer_offer(registry: StreamRegistry, config: PeerConfig, offer_sdp: str, kind: str = "offer",
                       stream_settings: StreamSettings | None = None) -> tuple[Stream, RTCSessionDescription]:
    """Answer an SDP offer with a new stream fed by a new peer. On failure nothing is left.

    ``kind`` is the source kind the stream reports (``offer``, ``whip``); it also picks the
    ``AudioPolicy``. ``stream_settings``: what the stream starts with (the model the offer
    named); None: the registry's defaults.

    Raises ``ServerFull`` (from the registry, before anything is built), ``GatherTimeout``
    when ICE gathering outlasts ``ice_gather_timeout``, ``NoCandidates`` when no local
    candidate could be gathered, ``NoVideo`` for an offer without a receivable video
    section, ``OfferError``/``ValueError`` for offers aiortc cannot answer. Before anything
    is built: ``TooManyCandidates`` for an offer over the session's candidate cap, and
    ``NoRemoteCandidates`` for one that says end-of-candidates and leaves none the server
    may use (``candidates.py`` drops the rest). The session's own TURN credential
    (``RTC_TURN_SECRET``) is made for it here.
    """
    candidates = config.remote_candidates()
    sdp, offered = candidates.filter_sdp(offer_sdp)  # TooManyCandidates before anything is built
    if "a=end-of-candidates" in sdp and "a=candidate:" not in sdp:
        raise NoRemoteCandidates(
            "the offer says a=end-of-candidates but carries no ICE candidate the server may use "
            f"({offered} sent, {candidates.dropped} dropped: private, link-local, loopback, multicast and "
            "mDNS addresses are not used unless RTC_ICE_ALLOW_NETWORKS allows them); send your candidates")
    stream = registry.open(kind, stream_settings)
    if candidates.dropped:
        stream.log.info("offer: %d of %d remote candidates dropped (forbidden ranges, mDNS names)",
                        candidates.dropped, offered)
    configuration = rtc_configuration(ice_servers(config.ice_servers, stream.id, static_credentials=True))
    source = PeerSource(stream, RTCPeerConnection(configuration=configuration), config.limits, kind,
                        audio=AUDIO_POLICY.get(kind, AudioPolicy.DRAIN), candidates=candidates)
    stream.attach(source)
    try:
        async with asyncio.timeout(config.ice_gather_timeout):
            answer = await source.accept(RTCSessionDescription(sdp=sdp, type="offer"))
        if config.public_address:  # 1:1 NAT: tell the peer the public address
            answer = RTCSessionDescription(advertise_address(answer.sdp, config.public_address), "answer")
        if "a=candidate:" not in answer.sdp:
            raise NoCandidates("no UDP port or relay is free for a new session (RTC_UDP_PORTS all taken?); "
                               "retry shortly")
    except TimeoutError as exc:
        await stream.close("ice gather timeout")
        raise GatherTimeout(f"ICE gathering took over {config.ice_gather_timeout} s "
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
