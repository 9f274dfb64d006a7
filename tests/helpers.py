"""Helpers for tests that serve the real app on a loopback port (aiohttp's ``aiohttp_server``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import NoReturn

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

ServerFactory = Callable[..., "asyncio.Future[TestServer]"]


async def serve(aiohttp_server: ServerFactory, app: web.Application) -> str:
    """Serve ``app`` on 127.0.0.1 and return its base URL once ``/readyz`` says 200."""
    server = await aiohttp_server(app, host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")
    async with asyncio.timeout(30), aiohttp.ClientSession() as http:
        while (await http.get(f"{url}/readyz")).status != 200:
            await asyncio.sleep(0.05)
    return url


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``predicate`` until true (state changes driven by the peer's own tasks)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


#: Set by CI (``.ci/run``): a test that cannot run here for want of a real dependency
#: (a browser, a container engine, a network namespace, a third-party client) fails instead
#: of skipping, so CI cannot go green on what it never ran.
STRICT = os.environ.get("RTC_TESTS_STRICT") == "1"


def cannot_run(reason: str) -> NoReturn:
    """Skip (on a user's machine) or fail (under ``RTC_TESTS_STRICT=1``), saying why."""
    if STRICT:
        pytest.fail(f"essential test could not run (RTC_TESTS_STRICT=1): {reason}", pytrace=False)
    pytest.skip(reason)
