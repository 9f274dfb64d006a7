"""The package as users install it: ``pip install .`` then ``rtc-server`` serves the page."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from .helpers import ROOT, free_port, http_get, wait_ready_sync

pytestmark = pytest.mark.slow


def test_installed_wheel_serves_the_page(tmp_path: Path, model_file: Path) -> None:
    """Built as a wheel and installed outside the checkout, the server finds its page in the
    wheel's data (``<prefix>/share/rtc-yolo/static``), not in a source tree that is not there."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("rtc_yolo-*.whl")
    # One top-level package: the HTTP face is rtc_server.signaling, inside the runtime package.
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"rtc_server"}, tops
    assert any(n.startswith("rtc_server/signaling/") for n in names)
    prefix = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--prefix", str(prefix), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # The runtime dependencies come from this test environment (not reinstalled); the
    # package itself only from the wheel: the checkout is neither on the path nor the cwd.
    site_packages = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    deps = Path(sysconfig.get_path("purelib"))
    (site_packages / "test-deps.pth").write_text(f"{deps}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTC_") and k != "PYTHONPATH"}
    log = (tmp_path / "server.log").open("wb")
    # The console script, run by the new environment's interpreter (pip wrote our own into
    # its shebang, since it ran from this environment).
    command = [str(prefix / "bin" / "python"), str(prefix / "bin" / "rtc-server"), "--port", str(port),
               "--model", str(model_file), "--ice-addresses", "127.0.0.1"]
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready_sync(url, lambda: server.poll() is None)
        status, page = http_get(url + "/")
        assert status == 200 and "<button" in page, (status, page[:300])
        assert http_get(url + "/static/app.js")[0] == 200
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    served_from = subprocess.run([str(prefix / "bin" / "python"), "-c",
                                  "from rtc_server.config import Settings; print(Settings().static_dir)"],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert served_from == str(prefix / "share" / "rtc-yolo" / "static"), served_from
