"""WHIP (RFC 9725) against the real app: an aiortc WHIP client over loopback, and the
HTTP answers the RFC prescribes for everything a client can get wrong."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCPeerConnection

from drivers.client import ImageTrack, ToneTrack
from drivers.sinks import CollectingSink
from drivers.whip_client import WhipClient, WhipError, sdpfrag, split_candidates
from rtc_server.signaling.context import REGISTRY
from rtc_server.signaling.whip import entity_tag, ice_server_links
from rtc_server.webrtc.ice import rtc_configuration

from .helpers import ServerFactory, open_udp_sockets, serve

SDP = {"Content-Type": "application/sdp"}


async def offer_sdp(*kinds: str) -> str:
    """A real aiortc offer with a send-only transceiver per kind (no network: gathering is local)."""
    pc = RTCPeerConnection(rtc_configuration(()))
    for kind in kinds:
        pc.addTransceiver(kind, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_whip_session_streams_detections_and_delete_frees_it(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = make_app()
    url = await serve(aiohttp_server, app)
    udp_before = open_udp_sockets()
    client = WhipClient(f"{url}/whip", ImageTrack(bus_frame, fps=30), audio=ToneTrack())
    await client.connect()
    try:
        assert client.location == f"{url}/whip/{client.session_id}"
        assert client.etag == entity_tag(client.session_id or "")
        assert client.response_headers["Content-Type"] == ["application/sdp"]
        assert client.answer is not None and "a=recvonly" in client.answer and "a=sendrecv" not in client.answer
        stream = app[REGISTRY].get(client.session_id or "")
        assert stream is not None and stream.source_kind == "whip"
        sink = CollectingSink()
        stream.add_sink(sink)
        messages = await sink.wait_for(3)
        assert {"bus", "person"} <= {d["label"] for _, m in messages for d in m["detections"]}
        assert open_udp_sockets() - udp_before, "a live session holds its ICE socket"
    finally:
        status = await client.close()
    assert status == 200
    assert len(app[REGISTRY]) == 0 and sink.closed
    # the DELETE is answered once the session is closed: its ICE socket with it
    assert not open_udp_sockets() - udp_before
    async with aiohttp.ClientSession() as http:
        assert (await http.delete(client.location or "")).status == 404  # gone
        patch = await http.patch(client.location or "", data=b"a=end-of-candidates\r\n",
                                 headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"})
        assert patch.status == 404


async def test_trickled_candidates_are_applied(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An offer without candidates, then every candidate in one PATCH after the 201 (what a
    trickling WHIP client does): 204, the candidates reach the ICE agent, the session works."""
    app = stub_app()
    url = await serve(aiohttp_server, app)
    client = WhipClient(f"{url}/whip", ImageTrack(bus_frame, fps=30), trickle=True)
    caplog.set_level("INFO", logger="rtc_server.webrtc.peer")
    await client.connect()
    try:
        stream = app[REGISTRY].get(client.session_id or "")
        assert stream is not None
        sink = CollectingSink()
        stream.add_sink(sink)
        assert await sink.wait_for(2)
    finally:
        assert await client.close() == 200
    assert "trickle: 1 of 1 candidates added, end of candidates" in caplog.text


async def test_whip_errors_follow_the_rfc(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app(max_sessions=1)
    url = await serve(aiohttp_server, app)
    video_only, audio_only = await offer_sdp("video"), await offer_sdp("audio")
    async with aiohttp.ClientSession() as http:
        wrong_type = await http.post(f"{url}/whip", data=video_only, headers={"Content-Type": "application/json"})
        assert wrong_type.status == 415 and wrong_type.headers["Accept-Post"] == "application/sdp"
        assert (await wrong_type.json())["error"] == "unsupported_media_type"

        no_video = await http.post(f"{url}/whip", data=audio_only, headers=SDP)
        assert no_video.status == 422 and (await no_video.json())["error"] == "unsupported_offer"
        two_videos = await http.post(f"{url}/whip", data=await offer_sdp("video", "video"), headers=SDP)
        assert two_videos.status == 422

        unknown_model = await http.post(f"{url}/whip?model=nope", data=video_only, headers=SDP)
        assert unknown_model.status == 400 and (await unknown_model.json())["error"] == "unknown_model"

        garbage = await http.post(f"{url}/whip", data="v=0\r\nm=video nonsense\r\n", headers=SDP)
        assert garbage.status == 400 and (await garbage.json())["error"] == "bad_offer"
        not_sdp = await http.post(f"{url}/whip", data=b"\xff\xfe", headers=SDP)
        assert not_sdp.status == 400

        for method in ("DELETE", "PATCH"):
            unknown = await http.request(method, f"{url}/whip/{'0' * 32}", data=b"a=end-of-candidates\r\n",
                                         headers={"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"})
            assert unknown.status == 404 and (await unknown.json())["error"] == "unknown_session"

        not_allowed = await http.get(f"{url}/whip")
        assert not_allowed.status == 405 and "POST" in not_allowed.headers["Allow"]

        options = await http.options(f"{url}/whip")
        assert options.status == 200 and options.headers["Accept-Post"] == "application/sdp"

    client = WhipClient(f"{url}/whip", ImageTrack(bus_frame, fps=30))
    await client.connect()
    try:
        async with aiohttp.ClientSession() as http:
            full = await http.post(f"{url}/whip", data=video_only, headers=SDP)
            assert full.status == 503 and int(full.headers["Retry-After"]) > 0
            assert (await full.json())["error"] == "server_full"

            # PATCH semantics on a live session (RFC 9725 §4.3.1)
            frag = sdpfrag(client.pc.localDescription.sdp, [])
            frag_type = {"Content-Type": "application/trickle-ice-sdpfrag"}
            location = client.location or ""
            assert (await http.patch(location, data=frag, headers={**frag_type, "If-Match": "*"})).status == 204
            assert (await http.patch(location, data=frag, headers={"Content-Type": "text/plain",
                                                                  "If-Match": "*"})).status == 415
            assert (await http.patch(location, data=frag, headers=frag_type)).status == 428
            stale = await http.patch(location, data=frag, headers={**frag_type, "If-Match": '"stale"'})
            assert stale.status == 412
            good = await http.patch(location, data=frag, headers={**frag_type, "If-Match": client.etag or ""})
            assert good.status == 204 and "ETag" not in good.headers
            # new ICE credentials = an ICE restart: not supported -> 422, the session lives on
            restart = frag.replace("a=ice-ufrag:", "a=ice-ufrag:new").replace("a=ice-pwd:", "a=ice-pwd:new")
            refused = await http.patch(location, data=restart, headers={**frag_type, "If-Match": "*"})
            assert refused.status == 422 and (await refused.json())["error"] == "ice_restart_unsupported"
            malformed = await http.patch(location, data="a=candidate:not a candidate\r\n",
                                         headers={**frag_type, "If-Match": "*"})
            assert malformed.status == 400
            assert app[REGISTRY].get(client.session_id or "") is not None
    finally:
        assert await client.close() == 200


async def test_whip_takes_the_same_token_as_offer(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = stub_app(auth_token=("s3cret",))
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        anonymous = await http.post(f"{url}/whip", data=await offer_sdp("video"), headers=SDP)
        assert anonymous.status == 401 and "Bearer" in anonymous.headers["WWW-Authenticate"]
    with pytest.raises(WhipError) as refused:
        await WhipClient(f"{url}/whip", ImageTrack(bus_frame), token="wrong").connect()
    assert refused.value.status == 401
    client = WhipClient(f"{url}/whip", ImageTrack(bus_frame, fps=30), token="s3cret")
    await client.connect()
    async with aiohttp.ClientSession() as http:
        assert (await http.delete(client.location or "")).status == 401  # the session needs it too
    assert await client.close() == 200


async def test_cors_lets_a_listed_origin_run_a_whip_session(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    app = stub_app(cors_origins=("https://app.example",))
    url = await serve(aiohttp_server, app)
    origin = {"Origin": "https://app.example"}
    async with aiohttp.ClientSession() as http:
        for method in ("POST", "PATCH", "DELETE"):
            preflight = await http.options(f"{url}/whip/x", headers={
                **origin, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization,content-type,if-match"})
            assert preflight.status == 204
            assert method in preflight.headers["Access-Control-Allow-Methods"]
            assert "If-Match" in preflight.headers["Access-Control-Allow-Headers"]
        created = await http.post(f"{url}/whip", data=await offer_sdp("video"), headers={**SDP, **origin})
        assert created.status == 201
        exposed = {h.strip() for h in created.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Location", "Link", "ETag"} <= exposed
        assert (await http.delete(url + created.headers["Location"], headers=origin)).status == 200


async def test_ice_servers_are_link_headers(
    aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    servers = ({"urls": "stun:stun.example.net"},
               {"urls": ["turn:turn.example.net?transport=udp", "turns:turn.example.net?transport=tcp"],
                "username": "user", "credential": 'pa"ss'})
    links = ice_server_links(servers)
    assert links == [
        '<stun:stun.example.net>; rel="ice-server"',
        '<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; credential="pa\\"ss"; '
        'credential-type="password"',
        '<turns:turn.example.net?transport=tcp>; rel="ice-server"; username="user"; credential="pa\\"ss"; '
        'credential-type="password"',
    ]
    # served on OPTIONS (no gathering involved: the 201 carries the same list)
    app = stub_app(ice_servers=servers, auth_token=("t",))
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http:
        authorized = await http.options(f"{url}/whip", headers={"Authorization": "Bearer t"})
        assert authorized.headers.getall("Link") == links
        anonymous = await http.options(f"{url}/whip")
        assert anonymous.status == 200 and "Link" not in anonymous.headers  # no TURN secrets for strangers


def test_split_candidates_and_fragment_round_trip() -> None:
    sdp = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
           "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\n"
           "a=ice-pwd:0123456789012345678901\r\na=rtpmap:96 VP8/90000\r\n"
           "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n")
    stripped, candidates = split_candidates(sdp)
    assert "a=candidate" not in stripped and "end-of-candidates" not in stripped
    assert candidates == ["a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"]
    fragment = sdpfrag(sdp, candidates)
    assert fragment.splitlines() == ["a=ice-ufrag:abcd", "a=ice-pwd:0123456789012345678901",
                                     "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:0", candidates[0],
                                     "a=end-of-candidates"]
