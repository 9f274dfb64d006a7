"""One place that turns every failure into ``{"error": ..., "detail": ...}`` JSON.

Our handlers raise ``ClientError``; aiohttp's own 404/405/413 arrive as ``HTTPException``;
anything else is a server bug: logged with its traceback, answered 500, and the server
goes on serving every other client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ClientError(Exception):
    """A request the client must change (4xx) or retry later (503); ``headers`` go along
    with the answer (``Retry-After``, ``WWW-Authenticate``)."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = dict(headers or {})


#: Called with the error kind for every error answer; the app factory points it at
#: the metrics (``rtc_errors_total{kind="http_<error>"}``).
ERROR_SINK: web.AppKey[Callable[[str], None]] = web.AppKey("error_sink")


def count_error(request: web.Request, error: str) -> None:
    sink = request.app.get(ERROR_SINK)
    if sink is not None:
        sink(f"http_{error}")


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


def _slug(reason: str) -> str:
    return reason.lower().replace(" ", "_").replace("-", "_")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClientError as exc:
        log.info("%s %s %s -> %d %s: %s", request.remote, request.method, request.path, exc.status, exc.error,
                 exc.detail)
        count_error(request, exc.error)
        return error_response(exc.status, exc.error, exc.detail, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        log.info("%s %s %s -> %d %s", request.remote, request.method, request.path, exc.status, exc.reason)
        count_error(request, _slug(exc.reason))
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, _slug(exc.reason), exc.text or exc.reason, headers)
    except Exception:
        log.exception("%s %s -> 500", request.method, request.path)
        count_error(request, "internal_error")
        return error_response(500, "internal_error", "the server failed on this request; see its log")
