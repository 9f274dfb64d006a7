"""Hostile clients against the two rights (issue 20, part A): publishers are not operators.

The server runs as deployed — ``RTC_HOST=0.0.0.0``, i.e. not loopback-only — while the test
reaches it on 127.0.0.1 (only loopback traffic). Each refusal is asserted with its status and
JSON error, and ``/healthz`` must answer within 0.5 s all the while (a probe polls it
throughout). Callers: nobody, a forged token, the publish token (``RTC_AUTH_TOKEN``), the
publisher's own session token (from ``/offer``'s answer), another session's token, and the
operator token (``RTC_OPERATOR_TOKEN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.signaling.context import REGISTRY, TOKENS

from .helpers import ServerFactory, serve
from .sdp import make_offer

PUBLISH = "publish-secret-1"
OPERATOR = "operator-secret-1"
NOT_LOOPBACK = {"host": "0.0.0.0", "rate_limit": 0}


class Probe:
    """``GET /healthz`` every 50 ms from a task of the test's own loop; the worst answer time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self.answers = 0
        self.failures = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                started = time.monotonic()
                try:
                    async with http.get(self.url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        self.failures += r.status != 200
                except (aiohttp.ClientError, TimeoutError):
                    self.failures += 1
                self.worst = max(self.worst, time.monotonic() - started)
                self.answers += 1
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def healthy(url: str) -> AsyncIterator[Probe]:
    """The server must stay healthy meanwhile: every ``/healthz`` answered 200 within 0.5 s."""
    probe = Probe(url)
    task = asyncio.create_task(probe.run())
    try:
        yield probe
    finally:
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert probe.answers > 0 and probe.failures == 0, vars(probe)
    assert probe.worst < 0.5, f"/healthz took {probe.worst:.3f} s"


async def refused(response: aiohttp.ClientResponse, status: int, error: str | None = None) -> dict[str, Any]:
    body = await response.json(content_type=None)
    assert response.status == status, (response.method, response.url, response.status, body)
    assert set(body) == {"error", "detail"} and body["detail"], body
    if error is not None:
        assert body["error"] == error, body
    return body


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


# ----- routes x callers ------------------------------------------------------------------------

#: Callers of an operator route and what they get: 401 with no valid token anywhere, 403 with
#: a valid token that does not carry the right.
OPERATOR_ROUTE_CALLERS = {"nobody": 401, "forged": 401, "publish": 403, "own": 403, "other": 403, "operator": None}
#: Callers of one session's routes (the publisher's own session "A").
SESSION_ROUTE_CALLERS = {"nobody": 401, "forged": 401, "publish": 403, "own": None, "other": 403, "operator": None}


async def test_routes_by_caller_on_a_server_beyond_loopback(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], bus_frame: np.ndarray
) -> None:
    app = make_app(**NOT_LOOPBACK, auth_token=(PUBLISH,), operator_token=(OPERATOR,), metrics_auth=True)
    url = await serve(aiohttp_server, app)
    other = app[REGISTRY].open("offer")  # somebody else's session
    other_token, _ = app[TOKENS].issue(other.id)
    async with healthy(url), DetectionClient(url, ImageTrack(bus_frame, fps=15), token=PUBLISH) as client, \
            aiohttp.ClientSession() as http:
        await client.next_message()
        sid = client.session_id
        own = client.session_token
        assert own is not None and sid is not None
        tokens = {"nobody": None, "forged": "forged-token", "publish": PUBLISH, "own": own, "other": other_token,
                  "operator": OPERATOR}
        # Operator routes: the list, all of /streams, /metrics (RTC_METRICS_AUTH).
        operator_routes = [("GET", "/sessions", None), ("GET", "/streams", None), ("GET", "/streams/nope", None),
                           ("DELETE", "/streams/nope", None), ("POST", "/streams", {"url": "rtsp://127.0.0.1:9/x"}),
                           ("GET", "/metrics", None)]
        for method, path, body in operator_routes:
            for caller, status in OPERATOR_ROUTE_CALLERS.items():
                async with http.request(method, url + path, json=body, headers=bearer(tokens[caller])) as r:
                    if status is None:
                        assert r.status not in (401, 403), (method, path, caller, await r.text())
                    else:
                        detail = (await refused(r, status, "unauthorized" if status == 401 else "forbidden"))["detail"]
                        assert "RTC_OPERATOR_TOKEN" in detail, detail
        # One session's routes, the token as the bearer and (what a browser sends) as ?token=.
        session_routes = [("GET", f"/sessions/{sid}/snapshot.jpg", None), ("GET", f"/sessions/{sid}/events", None),
                          ("GET", f"/sessions/{sid}/ws", None), ("PATCH", f"/sessions/{sid}", {}),
                          ("POST", f"/sessions/{sid}/token", None)]
        for method, path, body in session_routes:
            for caller, status in SESSION_ROUTE_CALLERS.items():
                for how in ("bearer", "query"):
                    token = tokens[caller]
                    if how == "query" and (token is None or caller in ("publish", "operator")):
                        continue  # a bearer token never goes into a URL
                    kwargs: dict[str, Any] = ({"headers": bearer(token)} if how == "bearer"
                                              else {"params": {"token": token}})
                    async with http.request(method, url + path, json=body, **kwargs) as r:
                        if status is None:
                            assert r.status not in (401, 403), (method, path, caller, how, await r.text())
                        else:
                            await refused(r, status, "unauthorized" if status == 401 else "forbidden")
        # The publisher's token really opens its own session: events and a fresh token.
        async with http.get(f"{url}/sessions/{sid}/events", params={"token": own}) as events:
            assert events.status == 200
            assert (await events.content.readline()).startswith(b"retry:")
        fresh = await (await http.post(f"{url}/sessions/{sid}/token", headers=bearer(own))).json()
        assert app[TOKENS].valid(fresh["token"], sid)
        # Ending: nobody else may; the publisher may end its own; an operator may end any.
        for caller in ("nobody", "forged", "publish", "other"):
            async with http.delete(f"{url}/sessions/{sid}", headers=bearer(tokens[caller])) as r:
                await refused(r, SESSION_ROUTE_CALLERS[caller])
        assert app[REGISTRY].get(sid) is not None
        async with http.delete(f"{url}/sessions/{sid}", headers=bearer(own)) as r:
            assert r.status == 204
        async with http.delete(f"{url}/sessions/{other.id}", headers=bearer(own)) as r:
            await refused(r, 403, "forbidden")
        async with http.delete(f"{url}/sessions/{other.id}", headers=bearer(OPERATOR)) as r:
            assert r.status == 204
        # Publish routes: the publish token or the operator's; never a session token.
        for caller, allowed in (("nobody", False), ("forged", False), ("own", False), ("publish", True),
                                ("operator", True)):
            for method, path in (("POST", "/offer"), ("POST", "/predict"), ("GET", "/ice-servers"),
                                 ("POST", "/whip")):
                async with http.request(method, url + path, data=b"x", headers=bearer(tokens[caller])) as r:
                    if allowed:
                        assert r.status not in (401, 403), (method, path, caller, await r.text())
                    else:
                        await refused(r, 401, "unauthorized")


async def test_whip_gives_the_publisher_its_session_token(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]
) -> None:
    """WHIP's 201 carries the session token; it opens that session's routes and no other."""
    app = make_app(**NOT_LOOPBACK, operator_token=(OPERATOR,))
    url = await serve(aiohttp_server, app)
    async with healthy(url), aiohttp.ClientSession() as http:
        async with http.post(url + "/whip", data=await make_offer(channel=False),
                             headers={"Content-Type": "application/sdp"}) as r:
            assert r.status == 201, await r.text()
            token, location = r.headers["X-Session-Token"], r.headers["Location"]
        sid = location.rsplit("/", 1)[1]
        assert app[TOKENS].valid(token, sid)
        async with http.patch(f"{url}/sessions/{sid}", json={"conf": 0.5}, headers=bearer(token)) as r:
            assert r.status == 200 and (await r.json())["conf"] == 0.5
        await refused(await http.get(url + "/sessions", headers=bearer(token)), 403, "forbidden")
        async with http.delete(url + location, headers=bearer(token)) as r:
            assert r.status == 200


# ----- no operator token beyond loopback; loopback-only needs none -----------------------------

async def test_beyond_loopback_without_operator_token_the_operator_api_is_closed(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rtc_server")
    app = make_app(**NOT_LOOPBACK)
    closing = [r for r in caplog.records if "RTC_OPERATOR_TOKEN" in r.getMessage()]
    assert len(closing) == 1 and closing[0].levelno == logging.WARNING, [r.getMessage() for r in caplog.records]
    assert "0.0.0.0" in closing[0].getMessage() and "closed" in closing[0].getMessage()
    url = await serve(aiohttp_server, app)
    victim = app[REGISTRY].open("offer")
    async with healthy(url), aiohttp.ClientSession() as http:
        for method, path in (("GET", "/sessions"), ("GET", "/streams"), ("POST", "/streams"),
                             ("GET", f"/sessions/{victim.id}/snapshot.jpg"), ("GET", f"/sessions/{victim.id}/events"),
                             ("PATCH", f"/sessions/{victim.id}"), ("DELETE", f"/sessions/{victim.id}")):
            body = await refused(await http.request(method, url + path, json={}), 401, "unauthorized")
            assert "RTC_OPERATOR_TOKEN" in body["detail"] and "closed" in body["detail"], body
        # Publishing stays public: the page, /ice-servers, /models.
        for path in ("/", "/ice-servers", "/models", "/static/app.js"):
            async with http.get(url + path) as r:
                assert r.status == 200, path
    assert app[REGISTRY].get(victim.id) is not None
    await victim.close()


@pytest.mark.parametrize("exposed", [{"trusted_proxies": ("127.0.0.1/32",)}, {"public_hosts": ("cams.example",)}])
async def test_loopback_behind_a_proxy_or_public_name_is_not_loopback_only(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], exposed: dict[str, Any]
) -> None:
    """Behind Caddy on 127.0.0.1 (GCE with a domain) the world is one hop away: no exemption."""
    url = await serve(aiohttp_server, make_app(host="127.0.0.1", rate_limit=0, **exposed))
    async with aiohttp.ClientSession() as http:
        await refused(await http.get(url + "/sessions"), 401, "unauthorized")


async def test_loopback_only_server_needs_no_operator_token(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rtc_server")
    app = make_app(host="127.0.0.1", rate_limit=0)
    assert not [r for r in caplog.records if "RTC_OPERATOR_TOKEN" in r.getMessage()]
    url = await serve(aiohttp_server, app)
    stream = app[REGISTRY].open("offer")
    async with healthy(url), aiohttp.ClientSession() as http:
        for method, path in (("GET", "/sessions"), ("GET", "/streams"), ("PATCH", f"/sessions/{stream.id}")):
            async with http.request(method, url + path, json={}) as r:
                assert r.status == 200, (path, await r.text())
        async with http.delete(f"{url}/sessions/{stream.id}") as r:
            assert r.status == 204


# ----- DNS rebinding: the Host allow-list ------------------------------------------------------

async def test_dns_rebinding_host_is_misdirected(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]
) -> None:
    app = make_app(host="127.0.0.1", rate_limit=0, public_hosts=("cams.example", "edge.example:8443"),
                   operator_token=(OPERATOR,))
    url = await serve(aiohttp_server, app)
    port = url.rsplit(":", 1)[1]
    async with healthy(url), aiohttp.ClientSession() as http:
        # The attack: a page on evil.test re-pointed at 127.0.0.1 sends its own name as both.
        for method, path in (("GET", "/"), ("GET", "/sessions"), ("POST", "/offer"), ("GET", "/ice-servers"),
                             ("GET", "/streams"), ("OPTIONS", "/offer")):
            headers = {"Host": f"evil.test:{port}", "Origin": f"http://evil.test:{port}"}
            body = await refused(await http.request(method, url + path, headers=headers), 421, "misdirected_request")
            assert "evil.test" in body["detail"]
        for host in ("evil.test", "cams.example.evil.test", f"edge.example:{port}", "[::2]:80", "127.0.0.1.evil.test"):
            await refused(await http.get(url + "/sessions", headers={"Host": host}), 421, "misdirected_request")
        # The probes answer any Host (a kubelet sends the pod's IP).
        for path in ("/healthz", "/readyz"):
            async with http.get(url + path, headers={"Host": "10.1.2.3:8080"}) as r:
                assert r.status == 200
        # Names it serves: loopback (any port), configured ones; same-origin pages pass CORS.
        # Any loopback address is a loopback name (a DNS name never is one): a GStreamer client
        # in a namespace reaches a server on 127.0.0.3.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]:9", "127.0.0.2", "cams.example",
                     "CAMS.example:1234", "edge.example:8443"):
            headers = {"Host": host, "Origin": f"http://{host}", **bearer(OPERATOR)}
            async with http.get(url + "/sessions", headers=headers) as r:
                assert r.status == 200, (host, await r.text())
        # An Origin naming an allowed host that is not this request's Host is cross-origin: 403.
        await refused(await http.get(url + "/sessions", headers={"Host": "cams.example", "Origin": "http://localhost",
                                                                  **bearer(OPERATOR)}),
                      403, "origin_not_allowed")


async def test_public_hosts_star_turns_the_check_off(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rtc_server")
    app = make_app(rate_limit=0, public_hosts=("*",))
    assert any("DNS rebinding" in r.getMessage() for r in caplog.records)
    url = await serve(aiohttp_server, app)
    async with aiohttp.ClientSession() as http, http.get(url + "/models", headers={"Host": "evil.test"}) as r:
        assert r.status == 200


# ----- /ice-servers and WHIP's Link: one rule ---------------------------------------------------

STATIC = ({"urls": "stun:stun.example:3478"},
          {"urls": "turn:static.example:3478", "username": "shared", "credential": "static-password"})
TURN = {"turn_secret": "rest-secret-0123456789", "turn_urls": ("turn:rest.example:3478",), "turn_ttl": 60}


async def test_ice_servers_anonymous_on_a_public_page_get_no_static_password(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]
) -> None:
    app = make_app(host="0.0.0.0", ice_servers=STATIC, **TURN, rate_limit=1, rate_burst=3)
    url = await serve(aiohttp_server, app)
    async with healthy(url), aiohttp.ClientSession() as http:
        body = await (await http.get(url + "/ice-servers")).json()
        servers = body["ice_servers"]
        assert {"urls": "stun:stun.example:3478"} in servers
        assert "static-password" not in str(body) and "static.example" not in str(body)
        (rest,) = [s for s in servers if s.get("urls") == ["turn:rest.example:3478"]]
        expiry = int(rest["username"].split(":")[0])
        assert 0 < expiry - time.time() <= 60  # short-lived, made for this page
        # WHIP's OPTIONS and 201 follow the same rule.
        async with http.options(url + "/whip") as r:
            links = r.headers.getall("Link", [])
            assert links and "static-password" not in str(links) and "rest.example" in str(links)
        # Under a rate limit: the burst, then 429.
        statuses = [(await http.get(url + "/ice-servers")).status for _ in range(4)]
        assert 429 in statuses, statuses
        await refused(await http.get(url + "/ice-servers"), 429, "rate_limited")


async def test_ice_servers_with_a_publish_token(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application]
) -> None:
    app = make_app(host="0.0.0.0", ice_servers=STATIC, auth_token=(PUBLISH,), operator_token=(OPERATOR,),
                   rate_limit=0)
    url = await serve(aiohttp_server, app)
    async with healthy(url), aiohttp.ClientSession() as http:
        await refused(await http.get(url + "/ice-servers"), 401, "unauthorized")
        await refused(await http.get(url + "/ice-servers", headers=bearer("forged")), 401, "unauthorized")
        for token in (PUBLISH, OPERATOR):
            body = await (await http.get(url + "/ice-servers", headers=bearer(token))).json()
            assert list(body["ice_servers"]) == [dict(s) for s in STATIC]
        async with http.options(url + "/whip") as r:  # anonymous: no Link at all
            assert r.status == 200 and not r.headers.getall("Link", [])
        async with http.options(url + "/whip", headers=bearer(PUBLISH)) as r:
            assert "static-password" in str(r.headers.getall("Link", []))


# ----- settings -----------------------------------------------------------------------------------

def test_rights_settings() -> None:
    from rtc_server.config import ConfigError, Settings, load_settings

    settings = load_settings([], {"RTC_OPERATOR_TOKEN": "op-a,op-b", "RTC_PUBLIC_HOSTS": "cams.example,x.example:443"})
    assert settings.operator_token == ("op-a", "op-b") and "op-a" not in repr(settings)
    assert settings.public_hosts == ("cams.example", "x.example:443")
    for bad in ({"operator_token": ("",)}, {"operator_token": ("same",), "auth_token": ("same",)},
                {"public_hosts": ("http://cams.example/",)}):
        with pytest.raises(ConfigError):
            Settings(**bad)  # type: ignore[arg-type]


def test_which_servers_are_loopback_only() -> None:
    from rtc_server import wiring
    from rtc_server.config import ConfigError, Settings

    for host, expected in (("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.5", True),
                           ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("rtc.example.com", False)):
        assert wiring.api_config(Settings(host=host)).loopback_only is expected, host
    assert not wiring.loopback_only(Settings(trusted_proxies=("127.0.0.1/32",)))  # Caddy in front
    assert not wiring.loopback_only(Settings(public_hosts=("cams.example",)))
    with pytest.raises(ConfigError, match="public_hosts"):
        wiring.host_policy(Settings(public_hosts=("cams.example:99999",)))
