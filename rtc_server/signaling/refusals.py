"""Why a new session could not be opened, as the HTTP answer — one mapping for every source.

``/offer``, ``/whip`` and ``/streams`` all open a stream in the registry and, for WebRTC,
answer an SDP offer. What can refuse them is the same, so it is answered the same way:
503 + ``Retry-After`` while the server cannot take a session now (draining, every slot
taken, no free UDP port, ICE gathering too slow: another instance or a later retry will
do), 400 for an offer aiortc cannot answer (or one that says end-of-candidates and leaves
none the server may use: ``bad_offer``, not "no UDP port"; or one over the candidate cap)
— or, for WHIP, 422 for a well-formed offer without usable video (RFC 9725 lets the server
say the SDP parsed but is not acceptable).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rtc_server.streams.registry import Draining, ServerFull
from rtc_server.webrtc.candidates import TooManyCandidates
from rtc_server.webrtc.peer import GatherTimeout, NoCandidates, NoVideo, OfferError

from .errors import ClientError


def _retry(seconds: int) -> dict[str, str]:
    return {"Retry-After": str(seconds)}


@contextlib.contextmanager
def capacity_refusals() -> Iterator[None]:
    """Draining or full: 503 with the registry's ``Retry-After`` (any source)."""
    try:
        yield
    except Draining as exc:
        raise ClientError(503, "draining", str(exc), _retry(exc.retry_after)) from exc
    except ServerFull as exc:
        raise ClientError(503, "server_full", str(exc), _retry(exc.retry_after)) from exc


@contextlib.contextmanager
def answer_refusals(no_video_status: int = 400) -> Iterator[None]:
    """Around ``answer_offer``: the capacity refusals, then why this offer got no answer."""
    with capacity_refusals():
        try:
            yield
        except NoCandidates as exc:
            raise ClientError(503, "no_candidates", str(exc), _retry(5)) from exc
        except GatherTimeout as exc:
            raise ClientError(503, "ice_gather_timeout", str(exc), _retry(5)) from exc
        except NoVideo as exc:
            if no_video_status == 400:
                raise ClientError(400, "bad_offer", str(exc)) from exc
            raise ClientError(no_video_status, "unsupported_offer", str(exc)) from exc
        except TooManyCandidates as exc:
            raise ClientError(400, "too_many_candidates", str(exc)) from exc
        except OfferError as exc:  # NoRemoteCandidates among them: end-of-candidates and none usable
            raise ClientError(400, "bad_offer", str(exc)) from exc
        except ValueError as exc:  # aiortc's SDP parser and negotiation raise ValueError
            raise ClientError(400, "bad_offer", f"the offer cannot be answered: {exc}") from exc
