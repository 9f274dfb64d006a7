"""The page's sessions view, live charts, and tracks, lines and zones (issue 21), in Debian's
real Chromium (same set-up as
``test_browser.py``: server and browser in a loopback-only network namespace).

One tab streams its fake camera (bus.jpg) through ``/offer``; another tab opens the sessions
view, finds that session in ``GET /sessions``, follows its detections over SSE drawn over
its snapshot, and charts its latency and detection rate. Assertions read
``window.rtcYolo.sessions`` / ``window.rtcYolo.charts`` and the DOM.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .browser_env import browser_network, launch_chromium, missing_requirements, page_server
from .helpers import ROOT, ServerProcess

REASON = missing_requirements()
pytestmark = pytest.mark.slow

if REASON is None:
    from playwright.sync_api import BrowserContext, Page, sync_playwright



@pytest.fixture(scope="module")
def network() -> Iterator[None]:
    with browser_network():
        yield


@pytest.fixture(scope="module")
def server(network: None, model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with page_server(tmp_path_factory.mktemp("server"), RTC_MODEL=str(model_file)) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser(network: None, bus_frame: np.ndarray, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[BrowserContext]:
    with sync_playwright() as p:  # its driver, and Chromium, start inside the namespace
        context = launch_chromium(p, tmp_path_factory.mktemp("chromium"), bus_frame, viewport=(1100, 1000))
        yield context
        context.close()


ARTIFACTS = ROOT / "artifacts" / "browser"


def app_state(page: Page) -> dict[str, Any]:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.rtcYolo))")


def start_and_wait(page: Page, messages: int) -> None:
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_function(f"() => window.rtcYolo.state === 'connected' && window.rtcYolo.messages >= {messages}",
                           timeout=30000)


def wait_for_sessions(server: ServerProcess, count: int, page: Page) -> None:
    for _ in range(150):
        if server.metric("rtc_sessions_active") == count:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"rtc_sessions_active is {server.metric('rtc_sessions_active')}, expected {count}")


def sessions_state(page: Page) -> dict[str, Any]:
    return app_state(page)["sessions"]


def open_page(browser: BrowserContext, url: str, errors: list[str]) -> Page:
    page = browser.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page


def watch_first_session(viewer: Page, source: str = "offer") -> dict[str, Any]:
    viewer.get_by_role("button", name="Sessions", exact=True).click()
    viewer.wait_for_function(f"() => window.rtcYolo.sessions.list.some((s) => s.source === '{source}')",
                             timeout=15000)
    entry = next(s for s in sessions_state(viewer)["list"] if s["source"] == source)
    viewer.get_by_role("button", name=f"Watch session {entry['id'][:8]}").click()
    return entry


def test_sessions_view_follows_a_camera_session_with_snapshot_boxes_and_chart(
        browser: BrowserContext, server: ServerProcess) -> None:
    errors: list[str] = []
    camera = open_page(browser, server.url + "/", errors)
    viewer = open_page(browser, server.url + "/", errors)
    try:
        start_and_wait(camera, messages=10)
        # The camera view charts its own session: frame-matched end-to-end, server time, rate.
        camera.wait_for_function("""() => { const c = window.rtcYolo.charts.camera;
            return c.draws > 0 && c.series.e2e.points > 5 && c.series.server.points > 5 && c.series.rate.last > 0; }""",
                                 timeout=20000)
        camera_chart = app_state(camera)["charts"]["camera"]
        assert 0 < camera_chart["series"]["e2e"]["last"] < 10000

        entry = watch_first_session(viewer)
        assert entry["id"] == app_state(camera)["sessionId"] and entry["model"] == "yolo11n"
        row = viewer.locator(f"#sessions-rows tr[data-id='{entry['id']}']")
        assert row.locator("td").nth(1).inner_text() == "offer"
        viewer.wait_for_function("""() => { const s = window.rtcYolo.sessions;
            return s.state === 'watching' && s.messages >= 10 && s.snapshots >= 3
                && s.drawnLabels.includes('bus') && s.drawnLabels.includes('person'); }""", timeout=30000)
        # The sender's end-to-end figure reaches the viewer through GET /sessions.
        viewer.wait_for_function("""() => { const c = window.rtcYolo.charts.watch;
            return c.series.server.points > 5 && c.series.rate.last > 0 && c.series.e2e.points > 0; }""",
                                 timeout=20000)
        s = sessions_state(viewer)
        assert s["snapshotSize"]["width"] == s["frame"]["width"] and s["snapshotSize"]["width"] > 0
        shown = viewer.locator("#watch-image").bounding_box()
        assert shown is not None and shown["width"] > 0
        for box in s["drawn"]:  # scaled to the displayed snapshot
            assert -1 <= box["x"] and box["x"] + box["w"] <= shown["width"] + 1, box
            assert -1 <= box["y"] and box["y"] + box["h"] <= shown["height"] + 1, box
        assert set(viewer.locator("#watch-overlay").get_attribute("data-labels").split(",")) >= {"bus", "person"}
        for name in ("source", "fps", "serverMs", "e2eMs", "frameSize", "model"):
            text = viewer.locator(f"#watch-stats [data-stat='{name}']").inner_text()
            assert text and text != "–", (name, text)
        assert s["stats"]["e2eMs"] > 0 and s["stats"]["model"] == "yolo11n"
        # The list counts the viewer as a subscriber of that session.
        viewer.wait_for_function(f"""() => window.rtcYolo.sessions.list.some(
            (s) => s.id === '{entry["id"]}' && s.subscribers.length === 1)""", timeout=10000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(path=str(ARTIFACTS / "sessions.png"))
        camera.screenshot(path=str(ARTIFACTS / "page-chart.png"))
        print(f"\nscreenshots: {ARTIFACTS / 'sessions.png'}, {ARTIFACTS / 'page-chart.png'}; "
              f"viewer: {s['messages']} messages, {s['snapshots']} snapshots")

        # The sender stops: the viewer is told over SSE, and the list empties.
        camera.get_by_role("button", name="Stop", exact=True).click()
        viewer.wait_for_function("() => window.rtcYolo.sessions.state === 'ended'", timeout=15000)
        assert "Session ended" in viewer.locator("#watch-status").inner_text()
        viewer.wait_for_function("() => window.rtcYolo.sessions.list.length === 0", timeout=10000)
        assert "No live sessions" in viewer.locator("#sessions-state").inner_text()
    finally:
        camera.close()
        viewer.close()
    assert not errors, f"uncaught errors on the page: {errors}"


def test_ending_a_session_from_the_sessions_view(browser: BrowserContext, server: ServerProcess) -> None:
    errors: list[str] = []
    camera = open_page(browser, server.url + "/", errors)
    viewer = open_page(browser, server.url + "/#view=sessions", errors)  # a dashboard link
    try:
        start_and_wait(camera, messages=3)
        viewer.wait_for_function("() => window.rtcYolo.sessions.list.length === 1", timeout=15000)
        entry = sessions_state(viewer)["list"][0]
        viewer.get_by_role("button", name=f"End session {entry['id'][:8]}").click()  # DELETE /sessions/{id}
        camera.wait_for_function("() => window.rtcYolo.state === 'failed'", timeout=15000)
        assert app_state(camera)["error"]["kind"] == "dropped"
        wait_for_sessions(server, 0, viewer)
        viewer.wait_for_function("() => window.rtcYolo.sessions.list.length === 0", timeout=10000)
    finally:
        camera.close()
        viewer.close()
    assert not errors, f"uncaught errors on the page: {errors}"


def test_sessions_view_with_auth_uses_session_tokens(browser: BrowserContext, server: ServerProcess) -> None:
    """With RTC_AUTH_TOKEN the page sends the bearer token from its #token= fragment; the
    EventSource, which cannot send headers, opens with the session's own ?token=."""
    server.stop()
    server.start(RTC_AUTH_TOKEN="page-secret")
    errors: list[str] = []
    camera = open_page(browser, server.url + "/#token=page-secret", errors)
    viewer = open_page(browser, server.url + "/#view=sessions&token=page-secret", errors)
    stranger = open_page(browser, server.url + "/#view=sessions", errors)
    try:
        start_and_wait(camera, messages=3)
        watch_first_session(viewer)
        viewer.wait_for_function("""() => { const s = window.rtcYolo.sessions;
            return s.state === 'watching' && s.messages >= 5 && s.snapshots >= 1; }""", timeout=30000)
        stranger.wait_for_function("() => window.rtcYolo.sessions.listError !== null", timeout=10000)
        assert "401" in sessions_state(stranger)["listError"]
        assert sessions_state(stranger)["list"] == []
        camera.get_by_role("button", name="Stop", exact=True).click()
        viewer.wait_for_function("() => window.rtcYolo.sessions.state === 'ended'", timeout=15000)
    finally:
        camera.close()
        viewer.close()
        stranger.close()
        server.stop()
        server.start()
    assert not errors, f"uncaught errors on the page: {errors}"


def test_publisher_page_beyond_loopback_needs_no_operator_token(browser: BrowserContext,
                                                                server: ServerProcess) -> None:
    """Issue 20: the server as deployed (RTC_HOST=0.0.0.0, public publishing, an operator
    token set) while the browser still reaches it on 127.0.0.1. The camera page publishes and
    gets its detections with no token at all, and ends its own session with the session
    token of /offer's answer; the sessions view lists nothing without the operator token
    (it asks for one) and works once it is typed in."""
    server.stop()
    server.start(RTC_HOST="0.0.0.0", RTC_OPERATOR_TOKEN="operator-secret")
    errors: list[str] = []
    camera = open_page(browser, server.url + "/", errors)
    stranger = open_page(browser, server.url + "/#view=sessions", errors)
    try:
        assert "operator API (GET /sessions" not in server.log  # a token is set: no warning that it is closed
        start_and_wait(camera, messages=3)
        assert app_state(camera)["hasSessionToken"] is True
        stranger.wait_for_function("() => window.rtcYolo.sessions.denied !== null", timeout=10000)
        state = sessions_state(stranger)
        assert state["denied"]["status"] == 401 and state["list"] == []
        assert stranger.locator("#sessions").is_hidden() and stranger.locator("#operator-login").is_visible()
        assert "operator token" in stranger.locator("#sessions-state").inner_text()
        # The camera page's own Sessions view is refused too: a publisher is not an operator.
        camera.get_by_role("button", name="Sessions", exact=True).click()
        camera.wait_for_function("() => window.rtcYolo.sessions.denied !== null", timeout=10000)
        assert app_state(camera)["state"] == "connected"
        camera.get_by_role("button", name="Camera", exact=True).click()
        # The operator types the token in: the list and a watch work.
        stranger.get_by_label("Operator token").fill("operator-secret")
        stranger.get_by_role("button", name="Use token").click()
        stranger.wait_for_function("() => window.rtcYolo.sessions.list.length === 1", timeout=15000)
        assert stranger.locator("#sessions").is_visible() and stranger.locator("#operator-login").is_hidden()
        entry = sessions_state(stranger)["list"][0]
        stranger.get_by_role("button", name=f"Watch session {entry['id'][:8]}").click()
        stranger.wait_for_function("""() => { const s = window.rtcYolo.sessions;
            return s.state === 'watching' && s.messages >= 3; }""", timeout=30000)
        # Stop: the page ends its own session with its session token (DELETE /sessions/{id}).
        camera.get_by_role("button", name="Stop", exact=True).click()
        camera.wait_for_function("() => window.rtcYolo.endStatus === 204", timeout=10000)
        stranger.wait_for_function("() => window.rtcYolo.sessions.state === 'ended'", timeout=15000)
        wait_for_sessions(server, 0, camera)
    finally:
        camera.close()
        stranger.close()
        server.stop()
        server.start()
    assert not errors, f"uncaught errors on the page: {errors}"


def test_chart_draws_within_its_window(browser: BrowserContext, server: ServerProcess) -> None:
    """The chart module alone: points scroll out after the window, the canvas is drawn."""
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        result = page.evaluate("""async () => {
            const { LiveChart, niceMax } = await import("/static/chart.js");
            const canvas = document.createElement("canvas");
            canvas.style.width = "300px"; canvas.style.height = "100px";
            document.body.append(canvas);
            const chart = new LiveChart(canvas, [{ name: "a", label: "a", colour: "#fff", axis: "left", unit: "ms" }],
                                        { windowMs: 1000 });
            for (let t = 0; t <= 2000; t += 100) chart.add("a", t, t / 10);
            chart.add("a", 2000, NaN);
            chart.draw(2000);
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let lit = 0;
            for (let i = 3; i < pixels.length; i += 4) lit += pixels[i] > 0;
            return { summary: chart.summary(), lit, nice: [niceMax(0), niceMax(7), niceMax(23), niceMax(101)],
                     points: canvas.dataset.points };
        }""")
    finally:
        page.close()
    assert result["summary"]["series"]["a"] == {"points": 11, "last": 200}  # t in [1000, 2000]
    assert result["lit"] > 500 and result["points"] == "a:11"
    assert result["nice"] == [1, 10, 50, 200]


# ----- tracks, lines and zones (issue 21): labels carry track ids; a line and a zone drawn by
# clicking on the video reach the server (a config message from the camera view, PATCH
# /sessions/{id} from the sessions view) and their live counters show on the page.
#: Normalised points of the zone drawn: the right part of the frame (the person standing
#: there), clear of the figures panel in the bottom-left corner.
ZONE = [(0.4, 0.05), (0.97, 0.05), (0.97, 0.95), (0.4, 0.95)]


def click_at(page: Page, selector: str, x: float, y: float) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])


def server_settings(server: ServerProcess, session_id: str) -> dict[str, Any]:
    _, body = server.get("/sessions")
    (entry,) = [s for s in json.loads(body)["sessions"] if s["id"] == session_id]
    return entry["settings"]


def test_camera_view_shows_track_ids_and_draws_a_line_and_a_zone_with_counts(
        browser: BrowserContext, server: ServerProcess) -> None:
    errors: list[str] = []
    page = open_page(browser, server.url + "/", errors)
    try:
        start_and_wait(page, messages=5)
        # Track ids on the labels, the same id frame after frame for the still bus.
        page.wait_for_function("() => window.rtcYolo.drawn.some((d) => d.label === 'bus' && d.track_id >= 1)",
                               timeout=15000)
        first = next(d for d in app_state(page)["drawn"] if d["label"] == "bus")
        assert f"#{first['track_id']}" in first["text"]
        page.wait_for_function(f"""() => window.rtcYolo.messages >= {app_state(page)['messages'] + 5}""",
                               timeout=15000)
        again = next(d for d in app_state(page)["drawn"] if d["label"] == "bus")
        assert again["track_id"] == first["track_id"]

        page.get_by_role("button", name="Draw line", exact=True).click()
        click_at(page, "#overlay", 0.5, 0.1)
        click_at(page, "#overlay", 0.5, 0.9)
        page.wait_for_function("() => (window.rtcYolo.config.lines || []).length === 1", timeout=10000)
        sid = app_state(page)["sessionId"]
        (line,) = server_settings(server, sid)["lines"]
        assert line["name"] == "line 1"
        assert abs(line["a"][0] - 0.5) < 0.02 and abs(line["a"][1] - 0.1) < 0.02 and abs(line["b"][1] - 0.9) < 0.02

        page.get_by_role("button", name="Draw zone", exact=True).click()
        for x, y in ZONE:
            click_at(page, "#overlay", x, y)
        page.get_by_role("button", name="Finish zone", exact=True).click()
        page.wait_for_function("() => (window.rtcYolo.config.zones || []).length === 1", timeout=10000)
        (zone,) = server_settings(server, sid)["zones"]
        assert zone["name"] == "zone 1" and len(zone["polygon"]) == 4
        # Live counters: the person standing in the zone is inside it.
        page.wait_for_function("""() => /inside [1-9]/.test(
            document.querySelector("#counts dd[data-shape='zone 1']")?.textContent || '')""", timeout=15000)
        assert page.locator("#counts dd[data-shape='line 1']").inner_text() == "left 0 · right 0"
        assert page.locator("#overlay").get_attribute("data-shapes") == "line 1,zone 1"

        page.get_by_role("button", name="Clear", exact=True).click()
        page.wait_for_function("() => !window.rtcYolo.config.zones.length && !window.rtcYolo.config.lines.length",
                               timeout=10000)
        assert server_settings(server, sid)["zones"] == []
        page.get_by_role("button", name="Stop", exact=True).click()
    finally:
        page.close()
    assert not errors, errors


def test_sessions_view_draws_a_line_on_a_watched_session(browser: BrowserContext, server: ServerProcess) -> None:
    errors: list[str] = []
    camera = open_page(browser, server.url + "/", errors)
    viewer = open_page(browser, server.url + "/", errors)
    try:
        start_and_wait(camera, messages=5)
        entry = watch_first_session(viewer)
        viewer.wait_for_function("() => window.rtcYolo.sessions.state === 'watching' && "
                                 "window.rtcYolo.sessions.messages >= 3", timeout=30000)
        viewer.wait_for_function("() => window.rtcYolo.sessions.drawn.some((d) => d.track_id >= 1)", timeout=15000)
        viewer.get_by_role("button", name="Draw zone", exact=True).click()
        for x, y in ZONE:
            click_at(viewer, "#watch-overlay", x, y)
        viewer.get_by_role("button", name="Finish zone", exact=True).click()
        # PATCH /sessions/{id}: the server holds the zone, and the sender's page hears of it
        # (the config ack goes to every sink of the session).
        camera.wait_for_function("() => (window.rtcYolo.config.zones || []).length === 1", timeout=10000)
        (zone,) = server_settings(server, entry["id"])["zones"]
        assert zone["name"] == "zone 1"
        viewer.wait_for_function("""() => /inside [1-9]/.test(
            document.querySelector("#watch-counts dd[data-shape='zone 1']")?.textContent || '')""", timeout=15000)
        camera.get_by_role("button", name="Stop", exact=True).click()
    finally:
        camera.close()
        viewer.close()
    assert not errors, errors
