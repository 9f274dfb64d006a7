"""WHIP (RFC 9725): WebRTC ingest from OBS, FFmpeg, GStreamer — one HTTP POST per stream.

::

    POST   /whip        application/sdp offer -> 201 Created, application/sdp answer,
                        Location: /whip/{id}, ETag, Link: <turn:...>; rel="ice-server"
                        (?model=NAME picks the model, as /offer's "model" does)
    OPTIONS /whip       Accept-Post: application/sdp (+ the ICE servers as Link headers)
    PATCH  /whip/{id}   application/trickle-ice-sdpfrag: trickle ICE -> 204 No Content
    DELETE /whip/{id}   ends the session -> 200 OK

``{id}`` is the stream's id (the ``session_id`` of ``/offer``), the one ``GET /sessions``
and ``/sessions/{id}/events`` use. The peer behind it is the same ``answer_offer`` as
``/offer`` (source kind ``whip``): non-trickle on our side (the answer carries every
candidate we gathered, as RFC 9725 §4.3.2 requires), while the client may trickle its own
candidates with ``PATCH`` or send none at all (FFmpeg, OBS): aioice then learns the client's
address from its connectivity checks (a peer-reflexive candidate).

What the RFC leaves to us, and what we chose:

* Trickle ICE is supported, ICE restarts are not (aiortc cannot restart ICE): a ``PATCH``
  with new ICE credentials gets "422 Unprocessable Content", as §4.3.1 prescribes for a
  session that supports one of the two. Because trickle is supported, the session has an
  entity tag (``ETag`` on the 201) and a trickle ``PATCH`` must carry it in ``If-Match``:
  428 without it, 412 when it does not match (§4.3.1).
* A well-formed offer this server cannot use (no video, two video tracks, no codec we
  decode) is "422 Unprocessable Content"; a malformed one is 400 (§4.4.2–4.4.3 allow either;
  422 says "your SDP is valid, send other media"). Wrong content type: 415.
* Server full, draining, no free UDP port: 503 + ``Retry-After`` (§4.5). Unknown or ended
  session: 404.
* Auth (§4.7.1, ``auth.py``): POST needs the publish right, as ``/offer`` does. The 201
  also carries the publisher's session token (``X-Session-Token``, ``X-Session-Token-Expires``),
  which opens that session's events, snapshot and ``/sessions/{id}`` routes. PATCH and
  DELETE on the session URL take the publish token, that session's token, or an operator
  token. Session URLs carry the stream's random 122-bit uuid4 id (§5, IDOR), and
  DELETE/PATCH are rate limited per client address like POST.
* ICE servers (``Link``, §4.6) follow ``/ice-servers``' rule (``rtc_server/webrtc/turn.py``):
  static TURN passwords only to a caller that showed a token; generated, short-lived
  credentials to anyone allowed to publish.

Errors keep our JSON body (``{"error", "detail"}``) — the RFC asks only for the status.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from rtc_server.ratelimit import client_key
from rtc_server.streams.stream import Stream
from rtc_server.webrtc.candidates import TooManyCandidates
from rtc_server.webrtc.peer import (
    IceRestartUnsupported,
    PeerSource,
    answer_offer,
)
from rtc_server.webrtc.trickle import IceFragment
from rtc_server.webrtc.turn import ice_servers as ice_servers_for

from .auth import has_publish_token, may_publish, require_publish, require_session_access
from .context import API, INFERENCE, QUOTAS, RATE_LIMITS, REGISTRY, TOKENS
from .errors import ClientError
from .limits import MAX_OFFER_BYTES, read_capped
from .models import check_model
from .offers import check_sdp
from .refusals import answer_refusals

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
ENDPOINT = "/whip"
SOURCE_KIND = "whip"


def session_url(stream_id: str) -> str:
    """The ``Location`` of a WHIP session: relative to the server (RFC 9110 §10.2.2)."""
    return f"{ENDPOINT}/{stream_id}"


def entity_tag(stream_id: str) -> str:
    """The strong entity tag of the session's ICE session (RFC 9725 §4.3.1).

    Without ICE restarts a session has one ICE session for its whole life, so the tag is a
    function of the stream id alone: nothing to store, nothing to forget.
    """
    return '"' + hashlib.sha256(f"whip-ice:{stream_id}".encode()).hexdigest()[:32] + '"'


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_server_links(ice_servers: Iterable[Mapping[str, Any]]) -> list[str]:
    """``RTC_ICE_SERVERS`` as RFC 9725 §4.6 ``Link`` header values, one per URL."""
    links = []
    for server in ice_servers:
        urls = server["urls"]
        for url in [urls] if isinstance(urls, str) else urls:
            link = f'<{url}>; rel="ice-server"'
            if server.get("username") is not None and str(url).startswith(("turn:", "turns:")):
                link += f'; username={_quote(str(server["username"]))}'
                link += f'; credential={_quote(str(server.get("credential", "")))}'
                link += '; credential-type="password"'
            links.append(link)
    return links


def _headers(pairs: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in pairs:
        headers.add(name, value)
    return headers


def _guard(request: web.Request, bucket: str) -> None:
    """Rate limit (``POST /whip`` and the session URLs each have a bucket with the session
    limits of ``/offer``), then the publish right, as ``/offer``."""
    request.app[RATE_LIMITS].check(bucket, request)
    require_publish(request, request.app[API])


def _guard_session(request: web.Request) -> None:
    """The session URL: the publish token (a WHIP client sends the one it POSTed with), or
    that session's own token, or the operate right."""
    request.app[RATE_LIMITS].check("whip/{id}", request)
    config = request.app[API]
    if config.auth_token and has_publish_token(request, config):
        return
    if not config.auth_token:
        return  # public publishing: the unguessable session URL is the capability (RFC 9725 §5)
    require_session_access(request, config, request.app[TOKENS], request.match_info["session_id"])


async def _text_body(request: web.Request, what: str) -> str:
    try:
        return (await read_capped(request, MAX_OFFER_BYTES)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(400, "bad_offer" if what == "offer" else "bad_fragment",
                          f"the {what} is not UTF-8 text: {exc}") from exc


def _live_session(request: web.Request) -> Stream:
    stream_id = request.match_info["session_id"]
    stream = request.app[REGISTRY].get(stream_id)
    if stream is None or stream.closed or stream.source_kind != SOURCE_KIND:
        raise ClientError(404, "unknown_session", f"no live WHIP session {stream_id}")
    return stream


async def options_endpoint(request: web.Request) -> web.Response:
    """What the endpoint takes; the ICE servers too for an authorized client (RFC 9725 §4.6
    allows it for clients that must configure them before creating their offer)."""
    pairs = [("Accept-Post", SDP), ("Allow", "OPTIONS, POST")]
    config = request.app[API]
    if may_publish(request, config):  # no credentials for those who may not publish; the OPTIONS still succeeds
        try:
            request.app[RATE_LIMITS].check("ice-servers", request)  # generated credentials: under a rate limit
        except ClientError:
            pass
        else:
            servers = ice_servers_for(config.peer.ice_servers, f"whip-{uuid.uuid4().hex[:12]}",
                                      static_credentials=has_publish_token(request, config))
            pairs += [("Link", link) for link in ice_server_links(servers)]
    return web.Response(status=200, headers=_headers(pairs))


async def create_session(request: web.Request) -> web.Response:
    """``POST /whip``: an SDP offer in, 201 with the answer and the session's URL out."""
    _guard(request, "whip")
    if request.content_type != SDP:
        raise ClientError(415, "unsupported_media_type", f"send the SDP offer as {SDP}", {"Accept-Post": SDP})
    sdp = await _text_body(request, "offer")
    if not sdp.startswith("v=0"):
        raise ClientError(400, "bad_offer", "the body must be an SDP offer (text starting with v=0)")
    check_sdp(sdp, unusable_status=422)
    inference = request.app[INFERENCE]
    model = check_model(inference.models, request.query.get("model"))
    if not inference.ready:
        raise ClientError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "2"})
    peer, registry = request.app[API].peer, request.app[REGISTRY]
    with request.app[QUOTAS].hold("sessions", client_key(request.remote)) as slot, \
            answer_refusals(no_video_status=422):
        stream, answer = await answer_offer(registry, peer, sdp, kind=SOURCE_KIND,
                                            stream_settings=replace(registry.defaults(), model=model))
        slot.bind(stream.id)
    servers = ice_servers_for(peer.ice_servers, stream.id,
                              static_credentials=has_publish_token(request, request.app[API]))
    token, expires = request.app[TOKENS].issue(stream.id)  # the publisher's right to its own session
    headers = _headers([
        ("Location", session_url(stream.id)),
        ("ETag", entity_tag(stream.id)),
        ("X-Session-Token", token),
        ("X-Session-Token-Expires", str(expires)),
        *(("Link", link) for link in ice_server_links(servers)),
    ])
    return web.Response(status=201, body=answer.sdp.encode(), content_type=SDP, headers=headers)


def _if_match(header: str, tag: str) -> bool:
    return any(candidate.strip() in ("*", tag) for candidate in header.split(","))


async def patch_session(request: web.Request) -> web.Response:
    """``PATCH /whip/{id}``: trickle ICE candidates (204); an ICE restart is refused (422)."""
    _guard_session(request)
    stream = _live_session(request)
    if request.content_type != SDPFRAG:
        raise ClientError(415, "unsupported_media_type", f"send ICE candidates as {SDPFRAG}",
                          {"Accept-Patch": SDPFRAG})
    try:
        fragment = IceFragment.parse(await _text_body(request, "fragment"))
    except ValueError as exc:
        raise ClientError(400, "bad_fragment", f"the SDP fragment is malformed: {exc}") from exc
    if_match = request.headers.get("If-Match")
    if if_match is None:
        raise ClientError(428, "precondition_required", "send the session's ETag in If-Match")
    if not _if_match(if_match, entity_tag(stream.id)):
        raise ClientError(412, "precondition_failed", "If-Match does not match this session's ICE session")
    source = stream.source
    if not isinstance(source, PeerSource):  # a whip stream always has one; be explicit anyway
        raise ClientError(404, "unknown_session", f"no live WHIP session {stream.id}")
    try:
        await source.add_remote_ice(fragment)
    except IceRestartUnsupported as exc:
        raise ClientError(422, "ice_restart_unsupported", str(exc)) from exc
    except TooManyCandidates as exc:  # nothing of the fragment was added; the session goes on
        raise ClientError(400, "too_many_candidates", str(exc)) from exc
    return web.Response(status=204)


async def delete_session(request: web.Request) -> web.Response:
    """``DELETE /whip/{id}``: the stream's one close path; answered once its sockets are closed."""
    _guard_session(request)
    stream = _live_session(request)
    await stream.close("whip delete")
    return web.Response(status=200)


def setup_whip(app: web.Application) -> None:
    app.router.add_route("OPTIONS", ENDPOINT, options_endpoint)
    app.router.add_post(ENDPOINT, create_session)
    app.router.add_patch(ENDPOINT + "/{session_id}", patch_session)
    app.router.add_delete(ENDPOINT + "/{session_id}", delete_session)
