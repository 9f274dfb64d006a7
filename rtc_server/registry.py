"""``SessionRegistry``: the server's only session state — which sessions are live.

Signaling asks it for a new session per offer; a session removes itself on close. Shutdown
closes every session through the same ``PeerSession.close`` path.
"""

from __future__ import annotations

import asyncio
import logging

from aiortc import RTCPeerConnection, RTCSessionDescription

from .config import Settings
from .ice import advertise_address, filter_remote_candidates, rtc_configuration
from .inference import InferenceService
from .metrics import Metrics
from .session import PeerSession
from .yolo import Thresholds

log = logging.getLogger(__name__)


class SessionRegistry:
    def __init__(self, settings: Settings, inference: InferenceService) -> None:
        self._settings = settings
        self._inference = inference
        self._sessions: dict[str, PeerSession] = {}
        self.metrics = Metrics(lambda: len(self._sessions), inference.info)

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> PeerSession | None:
        return self._sessions.get(session_id)

    async def create(self, offer_sdp: str) -> tuple[PeerSession, RTCSessionDescription]:
        """Answer an SDP offer with a new session. On any failure nothing is left behind."""
        pc = RTCPeerConnection(configuration=rtc_configuration(self._settings.ice_servers))
        session = PeerSession(
            pc,
            self._inference,
            Thresholds(conf=self._settings.conf, iou=self._settings.iou, max_det=self._settings.max_det),
            self.metrics,
            on_closed=self._forget,
        )
        self._sessions[session.id] = session
        self.metrics.sessions_total.inc()
        try:
            sdp = filter_remote_candidates(offer_sdp, self._settings.ice_addresses)
            answer = await session.accept(RTCSessionDescription(sdp=sdp, type="offer"))
            if self._settings.public_address:  # 1:1 NAT: tell the peer the public address
                answer = RTCSessionDescription(advertise_address(answer.sdp, self._settings.public_address), "answer")
        except BaseException:
            await session.close()
            raise
        log.info("session %s: answered (%d active)", session.id[:8], len(self))
        return session, answer

    def _forget(self, session: PeerSession) -> None:
        self._sessions.pop(session.id, None)

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close() for s in list(self._sessions.values())), return_exceptions=True)
