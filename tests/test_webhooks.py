"""Webhooks (issue 21): events POSTed to real aiohttp receivers started by the tests, which
check the ``X-RTC-Signature`` HMAC; retries, a receiver that is down, a full queue, and the
pull sources' SSRF rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rtc_server.config import ConfigError, Settings
from rtc_server.engine.yolo import Thresholds
from rtc_server.ingest.policy import UrlRefused
from rtc_server.metrics import Metrics
from rtc_server.outputs import WebhookConfig, Webhooks, WebhookTarget
from rtc_server.streams.control import ControlError, StreamSettings, StreamWebhook, apply_config

from .helpers import ServerFactory, free_port, wait_for
from .webhook_receiver import SECRET, Receiver

LOOPBACK = ("127.0.0.0/8",)


def metrics() -> Metrics:
    return Metrics([])  # a registry of its own per object


def value(m: Metrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def event(n: int) -> dict[str, Any]:
    return {"type": "event", "event": "line_cross", "line": "door", "direction": "left", "track_id": n,
            "label": "person", "class_id": 0, "frame_id": n, "pts": n * 3000, "time": 1.0 + n}


async def test_events_arrive_signed_and_in_order(aiohttp_server: ServerFactory) -> None:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    m = metrics()
    hooks = Webhooks([WebhookTarget(f"http://127.0.0.1:{server.port}/hook", SECRET)],
                     WebhookConfig(allow_networks=LOOPBACK), m)
    await hooks.start()
    try:
        for n in range(5):
            hooks.publish("abc", event(n))
        await wait_for(lambda: len(receiver.events) == 5, 10)
    finally:
        await hooks.close()
    assert receiver.bad_signatures == 0
    assert [e["track_id"] for e in receiver.events] == [0, 1, 2, 3, 4]
    assert receiver.events[0] == {**event(0), "stream_id": "abc"}
    assert value(m, "rtc_event_deliveries_total", output="webhook") == 5


async def test_a_wrong_secret_is_refused_by_the_receiver_and_counted(aiohttp_server: ServerFactory) -> None:
    receiver = Receiver()
    server = await aiohttp_server(receiver.app())
    m = metrics()
    hooks = Webhooks([WebhookTarget(f"http://127.0.0.1:{server.port}/hook", "not-the-secret")],
                     WebhookConfig(allow_networks=LOOPBACK), m)
    await hooks.start()
    try:
        hooks.publish("abc", event(1))
        await wait_for(lambda: value(m, "rtc_event_drops_total", output="webhook", reason="rejected") == 1, 10)
    finally:
        await hooks.close()
    assert receiver.bad_signatures == 1 and receiver.requests == 1 and not receiver.events  # a 4xx: no retry


async def test_a_failing_receiver_is_retried_with_backoff(aiohttp_server: ServerFactory) -> None:
    receiver = Receiver(fail_first=2)
    server = await aiohttp_server(receiver.app())
    m = metrics()
    hooks = Webhooks([WebhookTarget(f"http://127.0.0.1:{server.port}/hook", SECRET)],
                     WebhookConfig(allow_networks=LOOPBACK, retries=3, backoff=0.05), m)
    await hooks.start()
    try:
        hooks.publish("abc", event(7))
        await wait_for(lambda: len(receiver.events) == 1, 10)
    finally:
        await hooks.close()
    assert receiver.requests == 3 and receiver.events[0]["track_id"] == 7
    assert value(m, "rtc_event_delivery_retries_total", output="webhook") == 2
    assert value(m, "rtc_event_drops_total", output="webhook", reason="failed") == 0


async def test_a_receiver_that_is_down_costs_counted_drops_and_a_bounded_queue() -> None:
    m = metrics()
    port = free_port()  # nothing listens there
    hooks = Webhooks([WebhookTarget(f"http://127.0.0.1:{port}/hook", SECRET)],
                     WebhookConfig(allow_networks=LOOPBACK, retries=1, backoff=0.05, timeout=1.0, queue=4), m)
    await hooks.start()
    try:
        for n in range(50):  # publish never blocks, however many
            hooks.publish("abc", event(n))
        target = hooks.targets[0]
        assert len(target._queue) <= 4
        full = value(m, "rtc_event_drops_total", output="webhook", reason="queue_full")
        assert full == 46
        # what was queued is tried (twice each) and dropped as failed
        await wait_for(lambda: value(m, "rtc_event_drops_total", output="webhook", reason="failed") == 4, 15)
        assert full + value(m, "rtc_event_drops_total", output="webhook", reason="failed") == 50
    finally:
        await hooks.close()
    assert value(m, "rtc_event_deliveries_total", output="webhook") == 0


async def test_the_ssrf_rules_of_pull_sources_apply(aiohttp_server: ServerFactory) -> None:
    # An IP literal outside the allowed networks is refused when configured...
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://[::1]/x", "ftp://example.com/",
                "file:///etc/passwd"):
        with pytest.raises(UrlRefused):
            Webhooks([WebhookTarget(url)], WebhookConfig(), metrics())
        with pytest.raises(ConfigError, match="webhook_urls"):
            Settings(webhook_urls=(url,))
    # ... and a name that resolves to one when it connects: nothing is sent there.
    receiver = Receiver(secret=None)
    server = await aiohttp_server(receiver.app())
    m = metrics()
    hooks = Webhooks([WebhookTarget(f"http://localhost:{server.port}/hook")], WebhookConfig(), m)
    await hooks.start()
    try:
        hooks.publish("abc", event(1))
        await wait_for(lambda: value(m, "rtc_event_drops_total", output="webhook", reason="refused") == 1, 10)
    finally:
        await hooks.close()
    assert receiver.requests == 0
    await asyncio.sleep(0)


def test_a_streams_webhooks_setting_is_checked_and_stated_without_secrets() -> None:
    base = StreamSettings(Thresholds())
    hooks = [{"url": "https://u:p@hooks.example:8443/in?key=k", "secret": "s"}, {"url": "http://b.example/x"}]
    settings = apply_config(base, {"webhooks": hooks})
    assert settings.webhooks == (StreamWebhook("https://u:p@hooks.example:8443/in?key=k", "s"),
                                 StreamWebhook("http://b.example/x"))
    assert [w.shown() for w in settings.webhooks] == [
        {"url": "https://hooks.example:8443/in", "signed": True}, {"url": "http://b.example/x", "signed": False}]
    assert "'s'" not in repr(settings)
    assert apply_config(settings, {"webhooks": None}).webhooks == ()
    for bad, why in (("http://x", "list"), ([{"url": "ftp://x"}], "http:// or https://"),
                     ([{"url": "http://x", "secret": ""}], "secret"), ([{"url": "http://x", "extra": 1}], "object"),
                     ([{"url": "http://x"}] * 5, "at most 4"), ([{"url": "http://x:99999/"}], "does not parse")):
        with pytest.raises(ControlError, match=why):
            apply_config(base, {"webhooks": bad})


async def test_a_streams_own_receiver_gets_its_events_signed_with_its_secret(aiohttp_server: ServerFactory) -> None:
    receiver = Receiver(secret="own")
    server = await aiohttp_server(receiver.app())
    m = metrics()
    hooks = Webhooks([], WebhookConfig(allow_networks=LOOPBACK), m)  # no server-wide receiver
    await hooks.start()
    own = (StreamWebhook(f"http://127.0.0.1:{server.port}/hook", "own"),)
    try:
        hooks.publish("s1", event(1), own)
        hooks.publish("s1", {"type": "detections"}, own)  # events only
        hooks.publish("s2", event(2), (StreamWebhook("http://169.254.169.254/x"),))  # refused, counted
        await wait_for(lambda: len(receiver.events) == 1, 10)
    finally:
        await hooks.close()
    assert receiver.events == [{**event(1), "stream_id": "s1"}] and receiver.bad_signatures == 0
    assert value(m, "rtc_event_drops_total", output="webhook", reason="refused") == 1
    assert len(hooks.stream_targets) == 1
