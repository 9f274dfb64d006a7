"""MQTT (issue 21) against a real Mosquitto broker started by the tests, with a real
``mosquitto_sub`` subscriber: events at QoS 1 on ``<prefix>/<stream id>/events``,
username/password, TLS, a broker that is down (counted drops, a bounded queue), reconnects,
and the events of a pulled video through the whole server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rtc_server.config import ConfigError, Settings
from rtc_server.metrics import Metrics
from rtc_server.outputs import Mqtt, MqttConfig, parse_mqtt_url
from rtc_server.signaling.context import REGISTRY

from .helpers import ServerFactory, scrape, self_signed, serve, wait_for
from .mosquitto import Mosquitto, Subscriber
from .pull_media import MediaProcess, make_crossing, media_server

LOOPBACK = ("127.0.0.0/8",)


def value(m: Metrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def event(n: int) -> dict[str, Any]:
    return {"type": "event", "event": "zone_enter", "zone": "till", "track_id": n, "label": "person",
            "class_id": 0, "frame_id": n, "pts": n * 3000, "time": 1.0 + n}


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    server = Mosquitto(tmp_path)
    await server.start()
    yield server
    await server.stop()


def test_the_url_says_broker_credentials_prefix_and_tls() -> None:
    b = parse_mqtt_url("mqtts://user:p%40ss@broker.example/site/cams")
    assert (b.host, b.port, b.tls, b.username, b.password, b.prefix) == (
        "broker.example", 8883, True, "user", "p@ss", "site/cams")
    assert parse_mqtt_url("mqtt://127.0.0.1").port == 1883 and parse_mqtt_url("mqtt://h").prefix == "rtc"
    for bad in ("http://h/x", "mqtt:///x", "mqtt://h/a/#", "mqtt://h/x?y=1"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)
        with pytest.raises(ConfigError, match="mqtt_url"):
            Settings(mqtt_url=bad)
    assert "p%40ss" not in repr(Settings(mqtt_url="mqtt://u:p%40ss@h"))


async def test_events_reach_a_real_subscriber_at_qos_1(broker: Mosquitto) -> None:
    sub = Subscriber(broker, "cams/+/events")
    await sub.start()
    m = Metrics([])
    out = Mqtt(parse_mqtt_url(broker.url()), MqttConfig(), m)
    await out.start()
    try:
        for n in range(5):
            out.publish("s1", event(n))
        out.publish("s1", {"type": "detections", "detections": []})  # not asked for: not sent
        await wait_for(lambda: len(sub.messages) == 5, 15)
    finally:
        await out.close()
        await sub.stop()
    assert [t for t, _ in sub.messages] == ["cams/s1/events"] * 5
    assert [e["track_id"] for _, e in sub.messages] == [0, 1, 2, 3, 4]
    assert sub.messages[0][1] == {**event(0), "stream_id": "s1"}
    assert value(m, "rtc_event_deliveries_total", output="mqtt") == 5  # each acknowledged (PUBACK)


async def test_wrong_credentials_are_counted_drops_not_a_crash(broker: Mosquitto) -> None:
    m = Metrics([])
    out = Mqtt(parse_mqtt_url(broker.url(password="wrong")), MqttConfig(queue=2), m)
    await out.start()
    try:
        for n in range(6):
            out.publish("s1", event(n))
        await wait_for(lambda: value(m, "rtc_errors_total", kind="mqtt_disconnected") >= 1, 15)
    finally:
        await out.close()
    assert not out.connected and value(m, "rtc_event_drops_total", output="mqtt", reason="queue_full") == 4


async def test_a_broker_that_is_down_costs_counted_drops_then_reconnects(broker: Mosquitto) -> None:
    m = Metrics([])
    out = Mqtt(parse_mqtt_url(broker.url()), MqttConfig(queue=4, reconnect_max=1.0), m)
    await out.start()
    try:
        await wait_for(lambda: out.connected, 15)
        await broker.stop()
        for n in range(20):  # never blocks; the queue holds 4 (a lost broker is noticed at the next publish)
            out.publish("s1", event(n))
        assert value(m, "rtc_event_drops_total", output="mqtt", reason="queue_full") == 16
        await broker.start()  # the same port: the output reconnects on its own
        await wait_for(lambda: value(m, "rtc_event_deliveries_total", output="mqtt") == 4, 20)
        sub = Subscriber(broker, "cams/#")
        await sub.start()
        out.publish("s2", event(99))
        await wait_for(lambda: len(sub.messages) == 1, 15)
        await sub.stop()
    finally:
        await out.close()
    assert sub.messages == [("cams/s2/events", {**event(99), "stream_id": "s2"})]


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    broker = Mosquitto(tmp_path, tls=(cert, key))
    await broker.start()
    try:
        sub = Subscriber(broker, "cams/+/events")
        await sub.start()
        m = Metrics([])
        out = Mqtt(parse_mqtt_url(broker.url()), MqttConfig(ca_file=cert), m)
        await out.start()
        try:
            out.publish("s1", event(1))
            await wait_for(lambda: len(sub.messages) == 1, 15)
        finally:
            await out.close()
            await sub.stop()
        # without the CA the broker's certificate is not trusted: nothing is delivered
        m2 = Metrics([])
        untrusted = Mqtt(parse_mqtt_url(broker.url()), MqttConfig(), m2)
        await untrusted.start()
        try:
            untrusted.publish("s1", event(2))
            await wait_for(lambda: value(m2, "rtc_errors_total", kind="mqtt_disconnected") >= 1, 15)
            assert value(m2, "rtc_event_deliveries_total", output="mqtt") == 0
        finally:
            await untrusted.close()
    finally:
        await broker.stop()


@pytest.fixture
async def crossing(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MediaProcess]:
    folder = tmp_path_factory.mktemp("issue-21-mqtt-media")
    make_crossing(folder / "crossing.mp4")
    server = media_server(folder)
    await server.start()
    yield server
    await server.stop()


async def test_a_pulled_videos_events_and_detections_reach_the_broker(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], broker: Mosquitto,
    crossing: MediaProcess
) -> None:
    sub = Subscriber(broker, "cams/#")
    await sub.start()
    app = make_app(source_allow_networks=LOOPBACK, mqtt_url=broker.url(), mqtt_detections=True)
    url = await serve(aiohttp_server, app)
    body = {"url": f"http://127.0.0.1:{crossing.port}/crossing.mp4", "conf": 0.2,
            "lines": [{"name": "middle", "a": [0.5, 0.05], "b": [0.5, 0.99]}]}
    try:
        async with aiohttp.ClientSession() as http, http.post(f"{url}/streams", json=body) as r:
            answer = await r.json()
            assert r.status == 201, answer
        await wait_for(lambda: len(app[REGISTRY]) == 0, 60)
        await wait_for(lambda: any(t.endswith("/events") for t, _ in sub.messages), 15)
        metrics = await scrape(url)
    finally:
        await sub.stop()
    sid = answer["id"]
    events = [m for t, m in sub.messages if t == f"cams/{sid}/events"]
    detections = [m for t, m in sub.messages if t == f"cams/{sid}/detections"]
    assert [(e["event"], e["line"], e["direction"]) for e in events] == [("line_cross", "middle", "left")]
    assert detections and all(m["type"] == "detections" for m in detections)
    assert metrics['rtc_event_deliveries_total{output="mqtt"}'] == 1
