"""RTC_TRUSTED_PROXIES: behind a proxy, rate limits, logs and the same-origin check see the
client the proxy names — and a header from anyone else changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from rtc_server.config import ConfigError, Settings, load_settings
from rtc_server.signaling.proxies import AccessLogger, client_of, parse_node

from .helpers import ClientFactory, ServerFactory, wait_for, wait_ready

JSON = {"Content-Type": "application/json"}
NETS = Settings().trusted_proxies  # () : parsed the same way as below
LOOPBACK_PROXY = ("127.0.0.1/32",)


async def new_client(aiohttp_client: ClientFactory, aiohttp_server: ServerFactory,
                     stub_app: Callable[..., web.Application], **overrides: object) -> TestClient:
    # One /offer per client and no refill within the test: the second request of a client is 429.
    server = await aiohttp_server(stub_app(rate_limit=0.001, rate_burst=1, **overrides),
                                  access_log_class=AccessLogger)  # the composition root's access log
    c = await aiohttp_client(server)
    await wait_ready(c)
    return c


async def offer_status(c: TestClient, headers: dict[str, str]) -> int:
    """A bad offer: 400 on its merits, or 429 when the client's bucket is empty."""
    return (await c.post("/offer", data="{}", headers={**JSON, **headers})).status


async def test_without_trusted_proxies_forwarding_headers_change_nothing(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    c = await new_client(aiohttp_client, aiohttp_server, stub_app)
    assert await offer_status(c, {"X-Forwarded-For": "198.51.100.1"}) == 400
    # Another "client" per the header, but the same TCP peer: the same bucket.
    assert await offer_status(c, {"X-Forwarded-For": "198.51.100.2"}) == 429
    assert await offer_status(c, {"Forwarded": "for=198.51.100.3"}) == 429


async def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    c = await new_client(aiohttp_client, aiohttp_server, stub_app, trusted_proxies=LOOPBACK_PROXY)
    assert await offer_status(c, {"X-Forwarded-For": "198.51.100.1"}) == 400
    assert await offer_status(c, {"X-Forwarded-For": "198.51.100.2"}) == 400
    assert await offer_status(c, {"X-Forwarded-For": "[2001:db8::7]:4711"}) == 400
    assert await offer_status(c, {"X-Forwarded-For": "198.51.100.1"}) == 429
    assert await offer_status(c, {"X-Forwarded-For": "2001:db8::7"}) == 429
    # A client cannot escape its bucket by prepending addresses: our proxy appends the real one.
    assert await offer_status(c, {"X-Forwarded-For": "203.0.113.99, 198.51.100.2"}) == 429


async def test_a_spoofed_header_from_an_untrusted_peer_changes_nothing(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    # The TCP peer is 127.0.0.1, which is not in the trusted network.
    c = await new_client(aiohttp_client, aiohttp_server, stub_app, trusted_proxies=("10.0.0.0/8",))
    assert await offer_status(c, {"X-Forwarded-For": "198.51.100.1"}) == 400
    assert await offer_status(c, {"X-Forwarded-For": "198.51.100.2"}) == 429


async def test_same_origin_uses_the_scheme_the_trusted_proxy_reports(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application]
) -> None:
    """A TLS-terminating proxy: the page is https://host, the server sees plain HTTP."""
    jpeg = {"Content-Type": "image/jpeg"}
    behind = await new_client(aiohttp_client, aiohttp_server, stub_app, trusted_proxies=LOOPBACK_PROXY)
    host = f"{behind.host}:{behind.port}"
    https = {"Origin": f"https://{host}", "X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.1"}
    assert (await behind.post("/predict", data=b"junk", headers={**jpeg, **https})).status == 400  # same origin
    # http://host is another origin than the https://host the client is on.
    mixed = {**https, "Origin": f"http://{host}"}
    assert (await behind.post("/predict", data=b"junk", headers={**jpeg, **mixed})).status == 403
    # Not behind a trusted proxy: X-Forwarded-Proto is not believed, the scheme is http.
    direct = await new_client(aiohttp_client, aiohttp_server, stub_app)
    host = f"{direct.host}:{direct.port}"
    spoofed = {"Origin": f"https://{host}", "X-Forwarded-Proto": "https"}
    assert (await direct.post("/predict", data=b"junk", headers={**jpeg, **spoofed})).status == 403
    assert (await direct.post("/predict", data=b"junk", headers={**jpeg, "Origin": f"http://{host}"})).status == 400


async def test_logs_name_the_client_not_the_proxy(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, stub_app: Callable[..., web.Application],
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = await new_client(aiohttp_client, aiohttp_server, stub_app, trusted_proxies=LOOPBACK_PROXY)
    with caplog.at_level(logging.INFO):
        await offer_status(c, {"X-Forwarded-For": "198.51.100.44"})
        await offer_status(c, {"X-Forwarded-For": "198.51.100.44"})
        # aiohttp writes the access line once the answer has been sent.
        await wait_for(lambda: sum(r.name == "aiohttp.access" for r in caplog.records) >= 2)
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    errors = [r.getMessage() for r in caplog.records if r.name == "rtc_server.signaling.errors"]
    assert access and all(line.startswith("198.51.100.44 ") for line in access), access
    assert any("198.51.100.44 POST /offer -> 429" in line for line in errors), errors


def _peer(remote: str, headers: dict[str, str]) -> web.Request:
    return make_mocked_request("GET", "/", headers=headers).clone(remote=remote)


@pytest.mark.parametrize(("remote", "headers", "expected"), [
    # The right-most address that is not a trusted proxy, through a chain of trusted hops.
    ("10.0.0.5", {"X-Forwarded-For": "203.0.113.1, 198.51.100.9, 10.0.0.7"}, ("198.51.100.9", "http")),
    # Several X-Forwarded-For headers are one list; X-Forwarded-Proto per hop.
    ("10.0.0.5", {"X-Forwarded-For": "198.51.100.9", "X-Forwarded-Proto": "https"}, ("198.51.100.9", "https")),
    # Every hop trusted (an internal caller, a health check): the left-most one.
    ("10.0.0.5", {"X-Forwarded-For": "10.1.1.1, 10.0.0.7"}, ("10.1.1.1", "http")),
    # A hop the proxy cannot name: the client stays the last address that is known.
    ("10.0.0.5", {"Forwarded": "for=unknown, for=10.0.0.7"}, ("10.0.0.7", "http")),
    ("10.0.0.5", {"Forwarded": 'for=198.51.100.2:1234;proto=https, for="_hidden"'}, ("10.0.0.5", "http")),
    # No header at all: the proxy itself.
    ("10.0.0.5", {}, ("10.0.0.5", "http")),
])
def test_client_of_chains(remote: str, headers: dict[str, str], expected: tuple[str, str]) -> None:
    header = "Forwarded" if "Forwarded" in headers else "X-Forwarded-For"  # RTC_PROXY_HEADER as the proxy sets
    settings = load_settings([], {"RTC_TRUSTED_PROXIES": "10.0.0.0/8", "RTC_PROXY_HEADER": header.lower()})
    assert settings.proxy_header == header
    assert client_of(_peer(remote, headers), settings.trusted_proxies, settings.proxy_header) == expected


def test_client_of_untrusted_peer_and_parsing() -> None:
    trusted = Settings(trusted_proxies=("10.0.0.0/8", "fd00::/8")).trusted_proxies
    assert client_of(_peer("198.51.100.1", {"X-Forwarded-For": "1.2.3.4"}), trusted) is None
    assert client_of(_peer("fd00::1", {"X-Forwarded-For": "2001:db8::1"}), trusted) == ("2001:db8::1", "http")
    assert str(parse_node('"[2001:db8::1]:443"')) == "2001:db8::1" and str(parse_node("1.2.3.4:80")) == "1.2.3.4"
    assert parse_node("unknown") is None and parse_node("_secret") is None
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings([], {"RTC_TRUSTED_PROXIES": "10.0.0.0/8,not-a-network"})
    assert NETS == ()
