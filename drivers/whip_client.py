"""An aiortc WHIP client (RFC 9725) for tests and benchmarks: POST the offer, PATCH
trickled candidates, DELETE the session.

    client = WhipClient("http://127.0.0.1:8080/whip", ImageTrack(frame))
    await client.connect()          # 201: client.location, client.etag, client.answer
    ...
    await client.close()            # DELETE client.location, then close the peer

``trickle=True`` sends the offer without any candidate and then the candidates in one
``PATCH`` (``application/trickle-ice-sdpfrag`` with ``If-Match``), the way a trickling
WHIP client does after the 201 (§4.3.2). Otherwise the offer carries every candidate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import SessionDescription

from rtc_server.webrtc.ice import rtc_configuration


class WhipError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"WHIP answered {status}: {body[:300]}")
        self.status = status


def split_candidates(sdp: str) -> tuple[str, list[str]]:
    """The SDP without its ``a=candidate``/``a=end-of-candidates`` lines, and those candidates."""
    kept, candidates = [], []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidates.append(line)
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", candidates


def sdpfrag(sdp: str, candidates: Sequence[str], end: bool = True) -> str:
    """An RFC 8840 fragment for the offer's first (BUNDLE-tagged) section: its ICE
    credentials, its mid, ``candidates`` (``a=candidate:...`` lines)."""
    media = SessionDescription.parse(sdp).media[0]
    assert media.ice is not None
    lines = [f"a=ice-ufrag:{media.ice.usernameFragment}", f"a=ice-pwd:{media.ice.password}",
             f"m={media.kind} 9 {media.profile} {' '.join(str(f) for f in media.fmt)}", f"a=mid:{media.rtp.muxId}",
             *candidates]
    if end:
        lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


class WhipClient:
    def __init__(self, endpoint: str, video: MediaStreamTrack, audio: MediaStreamTrack | None = None,
                 token: str | None = None, trickle: bool = False,
                 ice_servers: Sequence[dict[str, Any]] = ()) -> None:
        self.endpoint = endpoint
        self.token = token
        self.trickle = trickle
        self.video = video
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        if audio is not None:
            self.pc.addTransceiver(audio, direction="sendonly")
        self.pc.addTransceiver(video, direction="sendonly")
        self.location: str | None = None
        self.etag: str | None = None
        self.answer: str | None = None
        self.response_headers: dict[str, list[str]] = {}
        self.connected = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()

    @property
    def session_id(self) -> str | None:
        return self.location.rstrip("/").rsplit("/", 1)[-1] if self.location else None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def connect(self, timeout: float = 20.0) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        body, candidates = split_candidates(offer) if self.trickle else (offer, [])
        async with aiohttp.ClientSession() as http:
            async with http.post(self.endpoint, data=body.encode(), headers=self._headers("application/sdp")) as r:
                text = await r.text()
                if r.status != 201:
                    raise WhipError(r.status, text)
                self.location = urljoin(self.endpoint, r.headers["Location"])
                self.etag = r.headers.get("ETag")
                self.response_headers = {k: r.headers.getall(k) for k in r.headers}
            self.answer = text
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
            if self.trickle:
                await self.patch(http, sdpfrag(offer, candidates))
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def patch(self, http: aiohttp.ClientSession, fragment: str, if_match: str | None = None) -> int:
        assert self.location is not None
        headers = self._headers("application/trickle-ice-sdpfrag")
        headers["If-Match"] = if_match or self.etag or "*"
        async with http.patch(self.location, data=fragment.encode(), headers=headers) as r:
            if r.status != 204:
                raise WhipError(r.status, await r.text())
            return r.status

    async def delete(self) -> int | None:
        if self.location is None:
            return None
        async with aiohttp.ClientSession() as http, http.delete(self.location, headers=self._headers()) as r:
            return r.status

    async def close(self) -> int | None:
        """DELETE the session (RFC 9725 §4.2), then close the peer; the DELETE's status."""
        try:
            return await self.delete()
        finally:
            await self.pc.close()
