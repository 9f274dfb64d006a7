"""The page's model picker in Debian's real Chromium, against a server with two models.

The server (its own process) serves yolo11n (default) and ``people``, yolo11n cut to 3
classes (tests/derived_models.py) at input 320. The picker is filled from ``GET /models``;
a session starts on the model picked before Start (``"model"`` in the offer) and switches
live when another is picked (a ``config`` control message): A/B on one camera. Like
tests/test_browser.py, everything runs in a network namespace that has only loopback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .browser_env import browser_network, launch_chromium, page_server
from .derived_models import class_subset
from .helpers import ROOT, ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def network() -> Iterator[None]:
    with browser_network():
        yield


@pytest.fixture(scope="module")
def server(network: None, model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("server-models")
    people = class_subset(model_file, tmp / "people.onnx")
    with page_server(tmp, RTC_MODELS=f"yolo11n={model_file},people={people}#imgsz=320") as proc:
        yield proc


@pytest.fixture(scope="module")
def page(server: ServerProcess, bus_frame: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = launch_chromium(p, tmp_path_factory.mktemp("chromium-models"), bus_frame)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        yield page
        context.close()
    assert not errors, f"uncaught errors on the page: {errors}"


def test_the_picker_chooses_the_model_before_and_during_a_session(page: Any, server: ServerProcess) -> None:
    picker = page.get_by_role("combobox", name=re.compile("^Model"))  # its <label>
    page.wait_for_function("() => window.rtcYolo.models.length === 2")
    assert [o["value"] for o in page.evaluate("() => [...document.querySelectorAll('#model-picker option')]"
                                              ".map((o) => ({value: o.value}))")] == ["yolo11n", "people"]
    assert picker.input_value() == "yolo11n" and picker.is_enabled()

    picker.select_option("people")  # before Start: the offer names it
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_function("() => window.rtcYolo.state === 'connected' && window.rtcYolo.messages >= 5",
                           timeout=30000)
    page.wait_for_function("() => window.rtcYolo.config && window.rtcYolo.config.model === 'people'")
    assert page.evaluate("() => window.rtcYolo.stats.model") == "people"
    page.wait_for_function("() => document.querySelectorAll('#classes option').length === 3")
    page.wait_for_function("() => window.rtcYolo.drawnLabels.includes('person')", timeout=10000)
    assert "bus" not in page.evaluate("() => window.rtcYolo.drawnLabels")

    picker.select_option("yolo11n")  # live: a config message, no reconnection
    page.wait_for_function("() => window.rtcYolo.config.model === 'yolo11n'", timeout=10000)
    page.wait_for_function("() => window.rtcYolo.stats.model === 'yolo11n'", timeout=10000)
    page.wait_for_function("() => document.querySelectorAll('#classes option').length === 80")
    page.wait_for_function("() => window.rtcYolo.drawnLabels.includes('bus')", timeout=10000)
    assert page.locator("#stats #model").inner_text() == "yolo11n 8.3.250"
    shot = ROOT / "artifacts" / "browser" / "models.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot))
    print(f"\nscreenshot with the model picker: {shot}")

    page.get_by_role("button", name="Stop", exact=True).click()
    for _ in range(150):
        if server.metric("rtc_sessions_active") == 0:
            break
        page.wait_for_timeout(100)
    assert server.metric("rtc_sessions_active") == 0
