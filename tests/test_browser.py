"""The page, in Debian's real Chromium: fake camera showing bus.jpg -> WebRTC -> the server ->
boxes drawn on the page. Everything runs in a network namespace that has only loopback.

Assertions read ``window.rtcYolo``, the state object the page keeps of everything it shows
(what was drawn, every overlay figure), and the DOM (accessible names, the figures' text).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .browser_env import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    PAGE_PORT,
    browser_network,
    launch_chromium,
    missing_requirements,
    page_server,
)
from .helpers import ROOT, ServerProcess, cannot_run

REASON = missing_requirements()
pytestmark = [pytest.mark.slow]

if REASON is None:
    from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright
else:  # the names stay resolvable for annotations; every test fails/skips in the fixture
    BrowserContext = Page = Playwright = object  # type: ignore[misc,assignment]

ARTIFACTS = ROOT / "artifacts" / "browser"
#: A name Chrome resolves to 127.0.0.1 but does not count as a secure origin (it is not localhost).
INSECURE_HOST = "insecure.test"


@pytest.fixture(scope="module")
def network() -> Iterator[None]:
    with browser_network():
        yield


@pytest.fixture(scope="module")
def server(network: None, model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # insecure.test (mapped to 127.0.0.1 in Chromium) is a name the server must be told it
    # answers for: any other Host gets 421 (the DNS-rebinding guard, issue 20).
    with page_server(tmp_path_factory.mktemp("server"), RTC_MODEL=str(model_file),
                     RTC_PUBLIC_HOSTS=INSECURE_HOST) as proc:
        yield proc


@pytest.fixture(scope="module")
def playwright(network: None) -> Iterator[Playwright]:
    with sync_playwright() as p:  # its driver, and Chromium, start inside the namespace
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, bus_frame: np.ndarray, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[BrowserContext]:
    context = launch_chromium(playwright, tmp_path_factory.mktemp("chromium"), bus_frame,
                              args=[f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1"])
    yield context
    context.close()


@pytest.fixture
def page(browser: BrowserContext, server: ServerProcess) -> Iterator[Page]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    yield page
    page.close()
    assert not errors, f"uncaught errors on the page: {errors}"


def app_state(page: Page) -> dict[str, Any]:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.rtcYolo))")


def wait_for_sessions(server: ServerProcess, count: int, page: Page, timeout_ms: float = 15000) -> None:
    for _ in range(int(timeout_ms / 100)):
        if server.metric("rtc_sessions_active") == count:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"rtc_sessions_active is {server.metric('rtc_sessions_active')}, expected {count}")


def start_and_wait(page: Page, messages: int = 10) -> None:
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_function(f"() => window.rtcYolo.state === 'connected' && window.rtcYolo.messages >= {messages}",
                           timeout=30000)


def test_page_draws_bus_and_person_with_every_figure(page: Page, server: ServerProcess) -> None:
    assert page.get_by_role("button", name="Stop", exact=True).is_disabled()
    start_and_wait(page)
    assert server.metric("rtc_sessions_active") == 1

    # Detection messages keep arriving: some in each of three successive one-second windows.
    counts = []
    for _ in range(4):
        counts.append(app_state(page)["messages"])
        page.wait_for_timeout(1000)
    assert all(b > a for a, b in itertools.pairwise(counts)), counts
    page.wait_for_function("() => window.rtcYolo.e2e.length >= 5 && window.rtcYolo.stats.rttMs > 0", timeout=15000)

    s = app_state(page)
    assert {"bus", "person"} <= set(s["drawnLabels"]), s["drawnLabels"]
    assert set(page.locator("#overlay").get_attribute("data-labels").split(",")) >= {"bus", "person"}
    size = page.locator("#video").bounding_box()
    assert size is not None
    for box in s["drawn"]:  # scaled to the displayed video, not the received frame
        assert -1 <= box["x"] and box["x"] + box["w"] <= size["width"] + 1, box
        assert -1 <= box["y"] and box["y"] + box["h"] <= size["height"] + 1, box
    colours = {b["label"]: b["colour"] for b in s["drawn"]}
    assert colours["bus"] != colours["person"]

    st = s["stats"]
    assert st["fps"] > 0
    assert st["model"] == "yolo11n"
    assert st["frameSize"]["width"] > 0 and st["frameSize"]["height"] > 0
    assert isinstance(st["dropped"], int) and st["dropped"] >= 0
    parts = st["breakdown"]
    assert set(parts) == {"queue", "preprocess", "inference", "postprocess"}
    assert all(v >= 0 for v in parts.values()) and parts["inference"] > 0
    assert st["serverMs"] >= sum(parts.values()) - 0.5  # frame received -> message ready covers every stage
    assert 0 < st["rttMs"] < 5000
    # End-to-end, matched frame by frame: a frame's detections cannot be drawn before the
    # server has spent its time on that frame, and not absurdly late either.
    # The match is right, not merely plausible: the frame the page matched by RTP timestamp
    # is the n-th it sent, and the server numbered it n too (nothing is lost on loopback).
    for m in s["e2e"]:
        assert m["serverMs"] < m["e2eMs"] < 10000, m
        assert m["sentIndex"] == m["frameId"], m
    for figure in ("fps", "server-ms", "breakdown", "rtt-ms", "e2e-ms", "frame-size", "dropped", "model"):
        text = page.locator(f"#{figure}").inner_text()
        assert text and text != "–", (figure, text)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "page.png"
    page.screenshot(path=str(shot))
    e2e = sorted(m["e2eMs"] for m in s["e2e"])
    print(f"\nscreenshot of the page with boxes: {shot}\n"
          f"end-to-end p50 {e2e[len(e2e) // 2]:.1f} ms over {len(e2e)} matched frames; last server "
          f"{st['serverMs']:.1f} ms; round trip {st['rttMs']:.1f} ms; {st['fps']:.1f} detections/s")
    if os.environ.get("RTC_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "screenshot.png")

    page.get_by_role("button", name="Stop", exact=True).click()
    wait_for_sessions(server, 0, page)  # Stop ends the session on the server too
    assert app_state(page)["state"] == "stopped"
    assert page.get_by_role("button", name="Start", exact=True).is_enabled()


def test_thresholds_and_class_filter_apply_live(page: Page, server: ServerProcess) -> None:
    start_and_wait(page, messages=3)
    page.wait_for_function("() => document.querySelectorAll('#classes option').length === 80")
    page.get_by_label("Classes").select_option(["5"])  # bus only
    page.wait_for_function("() => JSON.stringify(window.rtcYolo.config.classes) === '[5]'")
    page.wait_for_function("() => window.rtcYolo.drawnLabels.join() === 'bus'", timeout=10000)

    page.get_by_role("button", name="All classes").click()
    page.wait_for_function("() => window.rtcYolo.config.classes === null")
    page.wait_for_function("() => window.rtcYolo.drawnLabels.includes('person')", timeout=10000)

    page.locator("#conf").fill("0.95")  # a range input: fires input + change
    page.wait_for_function("() => window.rtcYolo.config.conf === 0.95")
    page.wait_for_function("() => window.rtcYolo.drawn.every((d) => d.score >= 0.95)", timeout=10000)
    page.get_by_role("button", name="Stop", exact=True).click()
    wait_for_sessions(server, 0, page)


def test_dropped_connection_restarts_with_one_click(page: Page, server: ServerProcess) -> None:
    start_and_wait(page, messages=3)
    page.evaluate("() => { window.notReloaded = true; }")
    server.stop()  # graceful shutdown closes the session from the server's side
    page.wait_for_function("() => window.rtcYolo.state === 'failed'", timeout=30000)
    assert app_state(page)["error"]["kind"] == "dropped"
    assert "reconnect" in page.get_by_role("alert").inner_text().lower()
    server.start()
    start_and_wait(page, messages=3)  # one click
    assert page.evaluate("() => window.notReloaded === true")
    assert {"bus", "person"} <= set(app_state(page)["drawnLabels"])
    page.get_by_role("button", name="Stop", exact=True).click()
    wait_for_sessions(server, 0, page)


def test_server_unreachable_and_server_full_are_explained(page: Page, server: ServerProcess,
                                                          browser: BrowserContext) -> None:
    server.stop()
    try:
        page.get_by_role("button", name="Start", exact=True).click()
        page.wait_for_function("() => window.rtcYolo.state === 'failed'", timeout=30000)
        assert app_state(page)["error"]["kind"] == "unreachable"
        assert "rtc-server is running" in page.get_by_role("alert").inner_text()
    finally:
        server.start(RTC_MAX_SESSIONS="1")
    # A real full server: another tab holds the only slot, so /offer answers 503 + Retry-After.
    other = browser.new_page()
    try:
        other.goto(server.url + "/")
        start_and_wait(other, messages=2)
        page.get_by_role("button", name="Start", exact=True).click()
        page.wait_for_function("() => window.rtcYolo.state === 'failed'", timeout=30000)
        assert app_state(page)["error"]["kind"] == "server-full"
        text = page.get_by_role("alert").inner_text()
        assert "full" in text and "1 sessions" in text, text
        assert page.get_by_role("button", name="Start", exact=True).is_enabled()
        assert server.metric("rtc_sessions_active") == 1
        # The slot frees as soon as the other tab stops; one click then connects.
        other.get_by_role("button", name="Stop", exact=True).click()
        wait_for_sessions(server, 0, page)
        start_and_wait(page, messages=2)
        page.get_by_role("button", name="Stop", exact=True).click()
        wait_for_sessions(server, 0, page)
    finally:
        other.close()
        server.stop()
        server.start()


def test_insecure_context_is_explained(browser: BrowserContext, server: ServerProcess) -> None:
    page = browser.new_page()
    try:
        page.goto(f"http://{INSECURE_HOST}:{PAGE_PORT}/")
        assert app_state(page)["state"] == "insecure"
        assert "HTTPS" in page.get_by_role("alert").inner_text()
        assert page.get_by_role("button", name="Start", exact=True).is_disabled()
    finally:
        page.close()


def test_camera_denied_is_explained(playwright: Playwright, server: ServerProcess, tmp_path: Path) -> None:
    """A browser whose user says no: no fake permission UI, and prompts answered "deny"."""
    flags = [f for f in CHROMIUM_FLAGS if f != "--use-fake-ui-for-media-stream"] + ["--deny-permission-prompts"]
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=flags)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.get_by_role("button", name="Start", exact=True).click()
        page.wait_for_function("() => window.rtcYolo.state === 'failed'", timeout=15000)
        assert app_state(page)["error"]["kind"] == "camera-denied"
        assert "Allow the camera" in page.get_by_role("alert").inner_text()
    finally:
        context.close()


def test_camera_and_resolution_pickers(page: Page, server: ServerProcess) -> None:
    start_and_wait(page, messages=3)
    cameras = page.locator("#camera option")
    assert cameras.count() >= 1 and cameras.first.get_attribute("value")  # enumerateDevices, after permission
    page.get_by_label("Resolution").select_option("320x240")  # swapped live with replaceTrack
    page.wait_for_function("() => window.rtcYolo.stats.frameSize.width === 320", timeout=20000)
    page.wait_for_function("() => window.rtcYolo.frame.width === 320 && window.rtcYolo.drawnLabels.includes('bus')",
                           timeout=20000)
    s = app_state(page)
    assert s["stats"]["frameSize"] == {"width": 320, "height": 240} and s["state"] == "connected"
    # Boxes from a 320x240 frame are scaled up to the displayed video, not drawn in its corner.
    size = page.locator("#video").bounding_box()
    assert size is not None
    bus = max((d for d in s["drawn"] if d["label"] == "bus"), key=lambda d: d["w"])
    assert bus["x"] + bus["w"] > 320 and bus["x"] + bus["w"] <= size["width"] + 1, (bus, size)
    page.get_by_role("button", name="Stop", exact=True).click()
    wait_for_sessions(server, 0, page)


def test_ice_failure_names_turn(page: Page, server: ServerProcess) -> None:
    """HTTP works but UDP is blocked (inside the test's own namespace): the media path never forms."""
    if shutil.which("iptables") is None:
        cannot_run("iptables is missing: cannot block UDP to make ICE fail")
    rule = ["INPUT", "-p", "udp", "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        page.get_by_role("button", name="Start", exact=True).click()
        page.wait_for_function("() => window.rtcYolo.state === 'failed'", timeout=60000)
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    assert app_state(page)["error"]["kind"] == "ice-failed"
    assert "TURN" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("button", name="Start", exact=True).is_enabled()
    # The server half of that session never connected either; reaping such sessions is the
    # server's lifecycle work (issue 7), not the page's. Start the next test clean.
    server.stop()
    server.start()


def test_frame_clock_matches_across_rtp_wraparound(page: Page) -> None:
    """RTP timestamps are 32-bit and start anywhere; aiortc's pts keep growing past the wrap."""
    result = page.evaluate("""async () => {
        const { FrameClock } = await import("/static/latency.js");
        const clock = new FrameClock();
        const first = 2 ** 32 - 3000;           // one frame before the wrap
        clock.noteSent(first, 1000);
        clock.noteSent((first + 3000) % 2 ** 32, 1033);
        clock.noteSent((first + 6000) % 2 ** 32, 1066);
        return [clock.match(0, 1100), clock.match(6000, 1200), clock.match(6000 + 2 ** 32, 1200),
                clock.match(9000, 1300)];
    }""")
    assert result[0] == {"ms": 100, "sentIndex": 0}
    assert result[1] == {"ms": 134, "sentIndex": 2}
    assert result[2] == result[1]  # a pts past 2**32 (aiortc unwraps) still matches
    assert result[3] is None  # never sent: no figure rather than a wrong one


def test_missing_camera_is_explained(playwright: Playwright, server: ServerProcess, tmp_path: Path) -> None:
    """This machine has no camera: without Chrome's fake device there is none to open."""
    flags = [f for f in CHROMIUM_FLAGS if f != "--use-fake-device-for-media-stream"]
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=flags)
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        devices = page.evaluate("async () => (await navigator.mediaDevices.enumerateDevices()).map((d) => d.kind)")
        if "videoinput" in devices:
            pytest.skip("this machine has a real camera")  # not a missing dependency
        page.get_by_role("button", name="Start", exact=True).click()
        page.wait_for_function("() => window.rtcYolo.state === 'failed'", timeout=15000)
        assert app_state(page)["error"]["kind"] == "camera-missing"
        assert "No camera was found" in page.get_by_role("alert").inner_text()
    finally:
        context.close()


def test_worker_and_page_clocks_agree(page: Page) -> None:
    """Send times are taken in the worker, draw times in the page: their clocks must agree."""
    offsets = page.evaluate("""async () => {
        const worker = new Worker("/static/rtp-worker.js");
        const offsets = [];
        for (let i = 0; i < 20; i++) {
            const before = performance.timeOrigin + performance.now();
            const theirs = await new Promise((resolve) => {
                worker.onmessage = (e) => resolve(e.data.clock);
                worker.postMessage({ clock: true });
            });
            const after = performance.timeOrigin + performance.now();
            offsets.push({ early: before - theirs, late: theirs - after });
        }
        worker.terminate();
        return offsets;
    }""")
    # The worker's reading lies between the page's readings before and after asking
    # (1 ms slack for timeOrigin rounding): no offset big enough to matter in a latency figure.
    assert all(o["early"] <= 1 and o["late"] <= 1 for o in offsets), offsets
