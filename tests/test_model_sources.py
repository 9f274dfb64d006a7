"""Models from ``https://`` and ``gs://``: real servers on loopback, started by the tests.

- HTTPS: Python's ``http.server`` behind TLS with a certificate made here
  (``drivers/https_files.py``); the client trusts it only through ``SSL_CERT_FILE``
  (verification is never turned off).
- Cloud Storage: ``gcp-storage-emulator`` (PyPI) in its own process; the server reaches it
  through ``STORAGE_EMULATOR_HOST`` with Google's own client, as it would reach GCS.

In-process tests check the cache and every failure's message; process tests check that
``python -m rtc_server`` serves such models, downloads them once, and exits 1 saying which
failure stopped it (wrong sha256, 404, missing bucket/object, unreachable storage,
untrusted certificate, a model whose warm-up fails).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from drivers.https_files import HttpsFileServer
from rtc_server.engine.artifacts import sha256_of
from rtc_server.engine.model_sources import ModelSourceError, parse_spec, resolve

from .conftest import FIXTURES, ROOT
from .derived_models import class_subset, fails_at_run
from .helpers import ServerProcess, cannot_run, free_port, self_signed, wait_ready

WRONG = "0" * 64


# ----- a real HTTPS server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def https_server(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsFileServer]:
    with HttpsFileServer(tmp_path_factory.mktemp("https"), {"/models/yolo11n.onnx": model_file.read_bytes()},
                         truncated={"/truncated.onnx"}) as server:
        yield server


@pytest.fixture
def trust(https_server: HttpsFileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust the test server's certificate the documented way: SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(https_server.cert))


def _leftovers(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


def test_https_model_is_downloaded_once_verified_into_the_cache(
    https_server: HttpsFileServer, trust: None, model_file: Path, tmp_path: Path
) -> None:
    digest = sha256_of(model_file)
    spec = parse_spec(f"{https_server.url}/models/yolo11n.onnx#sha256={digest}")
    before = len(https_server.requests)
    path = resolve(spec, tmp_path)
    assert path == tmp_path / digest / "yolo11n.onnx" and sha256_of(path) == digest
    assert resolve(spec, tmp_path) == path  # the verified copy: no second download
    assert len(https_server.requests) == before + 1
    assert _leftovers(tmp_path) == [digest, f"{digest}/yolo11n.onnx"]  # no .part left

    path.write_bytes(b"corrupted on disk")  # a damaged cached copy is fetched again
    assert sha256_of(resolve(spec, tmp_path)) == digest
    assert len(https_server.requests) == before + 2


@pytest.mark.parametrize(("path", "sha256", "says"), [
    ("/models/yolo11n.onnx", WRONG, "sha256 is [0-9a-f]{64}, not the pinned 0{64}; refused, nothing kept"),
    ("/models/missing.onnx", WRONG, r"not found \(HTTP 404"),
    ("/truncated.onnx", WRONG, "the download from 127.0.0.1:[0-9]+ broke off after 1000 of 1000000 bytes"),
])
def test_https_failures_say_which_and_keep_nothing(
    https_server: HttpsFileServer, trust: None, tmp_path: Path, path: str, sha256: str, says: str
) -> None:
    with pytest.raises(ModelSourceError, match=says):
        resolve(parse_spec(f"{https_server.url}{path}#sha256={sha256}"), tmp_path)
    assert _leftovers(tmp_path) == []


def test_an_untrusted_certificate_is_refused_not_ignored(
    https_server: HttpsFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other, _ = self_signed(tmp_path)  # some other CA: the server's certificate is not trusted
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    with pytest.raises(ModelSourceError, match=r"TLS certificate of 127\.0\.0\.1:[0-9]+ is not trusted.*SSL_CERT_FILE"):
        resolve(parse_spec(f"{https_server.url}/models/yolo11n.onnx#sha256={WRONG}"), tmp_path / "cache")


def test_an_unreachable_host_is_named(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ModelSourceError, match=f"cannot reach 127.0.0.1:{port}"):
        resolve(parse_spec(f"https://127.0.0.1:{port}/m.onnx#sha256={WRONG}"), tmp_path, timeout=5)


def test_an_unwritable_cache_is_named(https_server: HttpsFileServer, trust: None, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelSourceError, match=r"cannot write to the model cache.*RTC_MODEL_CACHE"):
        resolve(parse_spec(f"{https_server.url}/models/yolo11n.onnx#sha256={WRONG}"), blocker / "cache")


# ----- a real Cloud Storage emulator -----------------------------------------------------------
@dataclass
class Storage:
    host: str  # for STORAGE_EMULATOR_HOST
    bucket: str
    objects: dict[str, str]  # object name -> sha256


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the storage emulator exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the storage emulator never listened")


@pytest.fixture(scope="module")
def storage(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    emulator = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent))
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs
    except ImportError:
        emulator = None
    if emulator is None:
        cannot_run("gcp-storage-emulator / google-cloud-storage not installed (the [test] extra has them)")
    port = free_port()
    proc = subprocess.Popen([emulator, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory",
                             "--default-bucket", "models", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc)
        host = f"http://127.0.0.1:{port}"
        client = gcs.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": host})
        subset = class_subset(model_file, tmp_path_factory.mktemp("gcs") / "yolo11n-3cls.onnx")
        objects = {}
        for name, path in (("yolo/yolo11n.onnx", model_file), ("yolo/people.onnx", subset)):
            client.bucket("models").blob(name).upload_from_filename(str(path))
            objects[name] = sha256_of(path)
        yield Storage(host, "models", objects)
    finally:
        proc.terminate()
        proc.wait(10)


def test_gs_model_is_downloaded_once_verified(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage.host)
    digest = storage.objects["yolo/yolo11n.onnx"]
    spec = parse_spec(f"gs://models/yolo/yolo11n.onnx#sha256={digest}")
    path = resolve(spec, tmp_path)
    assert path == tmp_path / digest / "yolo11n.onnx" and sha256_of(path) == digest
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # storage gone:
    assert resolve(spec, tmp_path) == path  # the cache serves


@pytest.mark.parametrize(("source", "says"), [
    ("gs://models/yolo/yolo11n.onnx#sha256=" + WRONG, "sha256 is [0-9a-f]{64}, not the pinned 0{64}"),
    ("gs://models/yolo/yolo11x.onnx#sha256=" + WRONG, "no object 'yolo/yolo11x.onnx' in bucket 'models'"),
    ("gs://no-such-bucket/yolo11n.onnx#sha256=" + WRONG, "bucket 'no-such-bucket' does not exist"),
])
def test_gs_failures_say_which(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, says: str
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage.host)
    with pytest.raises(ModelSourceError, match=says):
        resolve(parse_spec(source), tmp_path)
    assert _leftovers(tmp_path) == []


def test_unreachable_storage_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    with pytest.raises(ModelSourceError, match=f"cannot reach Cloud Storage at {endpoint}"):
        resolve(parse_spec(f"gs://models/m.onnx#sha256={WRONG}"), tmp_path, timeout=2)
    assert _leftovers(tmp_path) == []


# ----- the real process ------------------------------------------------------------------------
@pytest.fixture
def spawn(spawn: Callable[..., ServerProcess], tmp_path: Path) -> Callable[..., ServerProcess]:
    """The suite's ``spawn``, every server with its model cache under ``tmp_path``."""
    return lambda env: spawn({"RTC_MODEL_CACHE": str(tmp_path / "cache"), **env})


async def test_server_serves_https_and_gs_models_and_reuses_its_cache(
    spawn: Callable[..., ServerProcess], https_server: HttpsFileServer, storage: Storage, model_file: Path,
    tmp_path: Path,
) -> None:
    people = storage.objects["yolo/people.onnx"]
    env = {"SSL_CERT_FILE": str(https_server.cert), "STORAGE_EMULATOR_HOST": storage.host,
           "RTC_MODELS": f"yolo11n={https_server.url}/models/yolo11n.onnx#sha256={sha256_of(model_file)},"
                         f"people=gs://models/yolo/people.onnx#sha256={people}&imgsz=320"}
    for attempt in ("download", "cache"):
        server = spawn(env)
        base = f"http://127.0.0.1:{server.port}"
        await wait_ready(base, server)
        async with aiohttp.ClientSession() as http:
            listed = (await (await http.get(f"{base}/models")).json())["models"]
            answer = await http.post(f"{base}/predict?model=people", data=(FIXTURES / "bus.jpg").read_bytes(),
                                     headers={"Content-Type": "image/jpeg"})
            body = await answer.json()
        assert [(m["name"], m["sha256"], m["ready"]) for m in listed] == [
            ("yolo11n", sha256_of(model_file), True), ("people", people, True)]
        assert answer.status == 200 and body["model"]["name"] == "people" and body["input_hw"] == [320, 256]
        server.proc.terminate()
        assert server.wait(15) == 0, server.log
        if attempt == "download":
            assert "downloaded" in server.log and "sha256 verified" in server.log
            # Both sources go away: the second start must come from the cache alone.
            env = {**env, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}",
                   "RTC_MODELS": env["RTC_MODELS"].replace(https_server.url, f"https://127.0.0.1:{free_port()}")}
        else:
            assert "downloaded" not in server.log and "verified copy in the cache" in server.log


@pytest.mark.parametrize("case", ["wrong_sha256", "http_404", "untrusted", "no_bucket", "no_object",
                                  "unreachable_storage", "no_credentials", "warmup_fails"])
def test_start_up_stops_with_exit_1_saying_which_failure(
    spawn: Callable[..., ServerProcess], https_server: HttpsFileServer, storage: Storage, model_file: Path,
    tmp_path: Path, case: str,
) -> None:
    https = {"SSL_CERT_FILE": str(https_server.cert)}
    gs = {"STORAGE_EMULATOR_HOST": storage.host}
    digest = sha256_of(model_file)
    env, says = {
        "wrong_sha256": ({**https, "RTC_MODEL": f"{https_server.url}/models/yolo11n.onnx#sha256={WRONG}"},
                         f"sha256 is {digest}, not the pinned {WRONG}; refused, nothing kept"),
        "http_404": ({**https, "RTC_MODEL": f"{https_server.url}/models/nope.onnx#sha256={digest}"},
                     "model 'nope' (https://127.0.0.1:"),
        "untrusted": ({"RTC_MODEL": f"{https_server.url}/models/yolo11n.onnx#sha256={digest}",
                       "SSL_CERT_FILE": str(self_signed(tmp_path)[0])}, "is not trusted"),
        "no_bucket": ({**gs, "RTC_MODEL": f"gs://other/yolo11n.onnx#sha256={digest}"},
                      "bucket 'other' does not exist"),
        "no_object": ({**gs, "RTC_MODELS": f"a={model_file},b=gs://models/b.onnx#sha256={digest}"},
                      "model 'b' (gs://models/b.onnx): no object 'b.onnx' in bucket 'models'"),
        "unreachable_storage": ({"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}",
                                 "RTC_MODEL_FETCH_TIMEOUT": "2",
                                 "RTC_MODEL": f"gs://models/yolo11n.onnx#sha256={digest}"},
                                "cannot reach Cloud Storage at http://127.0.0.1:"),
        # No emulator, no credentials: google-auth must find none — NO_GCE_CHECK and a loopback
        # metadata address keep it from probing the (non-existent) GCE metadata server.
        "no_credentials": ({"STORAGE_EMULATOR_HOST": "", "GOOGLE_APPLICATION_CREDENTIALS": "",
                            "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": f"127.0.0.1:{free_port()}",
                            "GCE_METADATA_IP": f"127.0.0.1:{free_port()}", "HOME": str(tmp_path),
                            "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
                            "RTC_MODEL": f"gs://models/yolo11n.onnx#sha256={digest}"},
                           "no Google credentials: on GKE or Cloud Run give the workload a service account"),
        "warmup_fails": ({"RTC_MODELS": f"yolo11n={model_file},broken={fails_at_run(tmp_path / 'broken.onnx')}"},
                         "model 'broken' failed its warm-up run, so it cannot serve"),
    }[case]
    server = spawn(env)
    assert server.wait(90) == 1, server.log
    assert says in server.log, server.log
    if case == "http_404":
        assert "not found (HTTP 404" in server.log
    assert "Traceback" not in server.log, server.log
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # nothing half-fetched kept


def test_pull_command_fills_the_cache(https_server: HttpsFileServer, model_file: Path, tmp_path: Path) -> None:
    """``python -m rtc_server.models pull`` (an image build or init container) then ``hash``."""
    digest = sha256_of(model_file)
    env = {**os.environ, "SSL_CERT_FILE": str(https_server.cert)}

    def pull(spec: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rtc_server.models", "pull", spec, "--cache", str(tmp_path)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    done = pull(f"n={https_server.url}/models/yolo11n.onnx#sha256={digest}")
    assert done.returncode == 0 and done.stdout.strip() == f"n: {tmp_path / digest / 'yolo11n.onnx'}", done
    refused = pull(f"{https_server.url}/models/yolo11n.onnx#sha256={WRONG}")
    assert refused.returncode == 1 and "model pull failed" in refused.stderr and "not the pinned" in refused.stderr
    hashed = subprocess.run([sys.executable, "-m", "rtc_server.models", "hash", str(model_file)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert hashed.stdout.split() == [digest, str(model_file)]
