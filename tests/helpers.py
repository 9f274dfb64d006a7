"""Helpers for tests that serve the real app on a loopback port (aiohttp's ``aiohttp_server``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
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


def open_udp_sockets() -> set[tuple[str, int]]:
    """The UDP sockets this process holds open, as ``(address, port)`` (IPv4 and IPv6).

    Read from ``/proc``: the socket inodes among this process's file descriptors, looked up
    in ``/proc/net/udp{,6}`` (of the process's network namespace). Used to check that a
    session's ICE sockets are really closed when it ends.
    """
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                address, port = fields[1].split(":")
                if len(address) == 8:  # IPv4, little-endian hex
                    address = ".".join(str(b) for b in bytes.fromhex(address)[::-1])
                found.add((address, int(port, 16)))
    return found
