"""The page's tracks, lines and zones (issue 21) in Debian's real Chromium (the set-up of
``test_browser_sessions.py``: server and browser in a loopback-only network namespace, the
fake camera showing bus.jpg).

Labels carry track ids; a line and a zone drawn by clicking on the video reach the server
(a ``config`` message from the camera view, ``PATCH /sessions/{id}`` from the sessions view)
and their live counters show on the page.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from . import test_browser_sessions as sessions_suite
from .helpers import ServerProcess
from .test_browser_sessions import REASON, app_state, open_page, start_and_wait, watch_first_session

# The same module-scoped set-up as the sessions suite: its namespace, server and browser.
network = sessions_suite.network
server = sessions_suite.server
browser = sessions_suite.browser

pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

if REASON is None:
    from playwright.sync_api import BrowserContext, Page

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
