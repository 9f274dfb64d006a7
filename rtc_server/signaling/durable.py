"""The hooks ``/streams`` calls to keep a pull stream durable (issue 22): small, so that the
handlers stay readable and the cluster's machinery stays behind one interface.

The composition root puts a ``StreamKeeper`` (``rtc_server.cluster.durable.DurableStreams``)
under ``KEEPER``; without one (an app built for a test without a store) nothing is kept. A
database that does not answer is a 503 with ``Retry-After``: the client retries, the live
sessions go on.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from rtc_server.store.errors import StoreUnavailable

from .errors import ClientError

#: Seconds a client told "the store is unavailable" is asked to wait.
STORE_RETRY_AFTER = 5


class StreamKeeper(Protocol):
    async def keep(self, stream_id: str, spec: dict[str, Any]) -> None: ...

    async def forget(self, stream_id: str) -> bool: ...


KEEPER: web.AppKey[StreamKeeper] = web.AppKey("stream_keeper")


def store_unavailable(exc: StoreUnavailable) -> ClientError:
    return ClientError(503, "store_unavailable", f"the database did not answer, so nothing was changed: {exc}",
                       {"Retry-After": str(STORE_RETRY_AFTER)})


async def keep_stream(request: web.Request, stream_id: str, spec: dict[str, Any]) -> None:
    """Write a new pull stream (``POST /streams``) before it is answered; 503 if it cannot be."""
    keeper = request.app.get(KEEPER)
    if keeper is None:
        return
    try:
        await keeper.keep(stream_id, spec)
    except StoreUnavailable as exc:
        raise store_unavailable(exc) from exc


async def forget_stream(request: web.Request, stream_id: str) -> bool:
    """Delete a pull stream from the store (``DELETE /streams/{id}``, on any replica: its owner
    stops it); False if it was not stored; 503 if the database does not answer."""
    keeper = request.app.get(KEEPER)
    if keeper is None:
        return False
    try:
        return await keeper.forget(stream_id)
    except StoreUnavailable as exc:
        raise store_unavailable(exc) from exc
