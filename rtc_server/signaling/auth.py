"""Who may do what: two rights, and the tokens that carry them.

* **Publish** — open one's own session: the page, ``/offer``, ``/whip``, ``/predict``,
  ``/ice-servers``. Public (a demo) when no publish token is set; otherwise it needs one of
  ``RTC_AUTH_TOKEN``'s tokens (the name is kept from before the two rights existed, so
  deployments that set it keep working; it now means "the publish token"). An operator
  token publishes too.
* **Operate** — everything about *other* sessions: ``GET /sessions``, another session's
  events/WebSocket/snapshot, ``PATCH``/``DELETE``/token of any session, all of
  ``/streams``, every stream's event history (``GET /events``), and ``/metrics`` with
  ``RTC_METRICS_AUTH``. It needs one of
  ``RTC_OPERATOR_TOKEN``'s tokens. The one exception is a server that listens on loopback
  only (and has no trusted proxy or public name in front: ``rtc_server/wiring.py``) and no
  operator token: there (one machine, one user, as before) operating follows the publish
  rule — open without ``RTC_AUTH_TOKEN``, its token with it. On any other
  address with no operator token the operator API is closed (401/403), and the composition
  root says so once at start.
* A publisher keeps a **session token** (``tokens.py``) for its own session only: it opens
  that session's events, WebSocket, snapshot, ``PATCH``/``DELETE /sessions/{id}``, a fresh
  token and its stream's event history (``GET /events?stream=<id>``), sent as ``?token=``
  (what an ``EventSource`` or ``<img>`` can send) or as the bearer.

Refusals: 401 for no token or one that is not valid anywhere; 403 for a token that is valid
but does not carry the right (a publish token on an operator route, a session token on
another session's route or on the list). Every configured token is compared with
``hmac.compare_digest`` and every token is tried (no early exit), so timing says nothing
about which one matched. The probes stay open.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from .context import ApiConfig
from .errors import ClientError
from .tokens import SessionTokens

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rtc-yolo"'}
_INVALID = {"WWW-Authenticate": 'Bearer realm="rtc-yolo", error="invalid_token"'}
_FORBIDDEN = {"WWW-Authenticate": 'Bearer realm="rtc-yolo", error="insufficient_scope"'}


def is_loopback_host(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bearer(request: web.Request) -> str | None:
    """The ``Authorization: Bearer`` token, or None when there is none."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def matches(candidate: str, tokens: tuple[str, ...]) -> bool:
    """Constant-time: whether ``candidate`` is one of ``tokens`` (every one compared)."""
    given = candidate.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given, token.encode())
    return matched


def require_token(request: web.Request, tokens: tuple[str, ...]) -> None:
    """Raise 401 unless ``tokens`` is empty or the request carries one of them."""
    if not tokens:
        return
    given = bearer(request)
    if given is None:
        raise ClientError(401, "unauthorized", "send 'Authorization: Bearer <token>'", _CHALLENGE)
    if not matches(given, tokens):
        raise ClientError(401, "unauthorized", "the bearer token is not valid", _INVALID)


def may_publish(request: web.Request, config: ApiConfig) -> bool:
    """Whether the caller has the publish right (no raise): public, or a publish/operator token."""
    if not config.auth_token:
        return True
    given = bearer(request)
    return given is not None and (matches(given, config.auth_token) | matches(given, config.operator_token))


def has_publish_token(request: web.Request, config: ApiConfig) -> bool:
    """Whether the caller *showed* a publish or operator token (not merely: publishing is
    public). Static TURN passwords go to such callers only (``rtc_server/webrtc/turn.py``)."""
    given = bearer(request)
    if given is None:
        return False
    return matches(given, config.auth_token + config.operator_token)


def require_publish(request: web.Request, config: ApiConfig) -> None:
    """The publish right: 401 unless publishing is public or the caller shows a publish
    (``RTC_AUTH_TOKEN``) or operator token."""
    if may_publish(request, config):
        return
    require_token(request, config.auth_token)  # raises the right 401


def _operator_mode(config: ApiConfig) -> str:
    if config.operator_token:
        return "token"
    return "loopback" if config.loopback_only else "closed"


def _refuse_operator(request: web.Request, config: ApiConfig, tokens: SessionTokens | None,
                     given: str | None) -> ClientError:
    closed = _operator_mode(config) == "closed"
    how = ("the operator API is closed: this server listens beyond loopback and has no operator token "
           "(set RTC_OPERATOR_TOKEN)" if closed
           else "this route needs an operator token: send 'Authorization: Bearer <RTC_OPERATOR_TOKEN>'")
    if given is None:
        return ClientError(401, "unauthorized", how, _CHALLENGE)
    if matches(given, config.auth_token):
        return ClientError(403, "forbidden", f"a publish token opens one's own session only; {how}", _FORBIDDEN)
    if tokens is not None and tokens.session_of(given) is not None:
        return ClientError(403, "forbidden", f"a session token opens its own session only; {how}", _FORBIDDEN)
    return ClientError(401, "unauthorized", f"the bearer token is not valid; {how}", _INVALID)


def require_operator(request: web.Request, config: ApiConfig, tokens: SessionTokens | None = None) -> None:
    """The operate right (see the module's docstring); raises 401/403 ``ClientError``."""
    mode = _operator_mode(config)
    given = bearer(request)
    if mode == "loopback":
        require_token(request, config.auth_token)  # today's single-machine rule
        return
    if mode == "token" and given is not None and matches(given, config.operator_token):
        return
    raise _refuse_operator(request, config, tokens, given)


def require_session_access(request: web.Request, config: ApiConfig, tokens: SessionTokens,
                           session_id: str) -> None:
    """For the routes of one session (events, WebSocket, snapshot, ``PATCH``/``DELETE``, a
    fresh token): that session's own token (``?token=`` or the bearer), or the operate right."""
    if _operator_mode(config) == "loopback" and not config.auth_token:
        return  # one machine, no tokens: open, as before
    query_token = request.query.get("token")
    for given in (query_token, bearer(request)):
        if given is None:
            continue
        owner = tokens.session_of(given)
        if owner == session_id:
            return
        if owner is not None:
            raise ClientError(403, "forbidden", "this session token opens another session, not this one",
                              _FORBIDDEN)
    if query_token is not None and "Authorization" not in request.headers:
        raise ClientError(401, "unauthorized", "the session token is not valid for this session or has expired; "
                          "get a fresh one with POST /sessions/{id}/token", _INVALID)
    require_operator(request, config, tokens)
