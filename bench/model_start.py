"""What model sources and several models cost at start-up: process start → ``/readyz`` 200.

Configurations, run interleaved (one of each per round, so a noisy neighbour hits them
alike), each a fresh ``python -m rtc_server`` on loopback:

- ``local``: one local model (today's default);
- ``two``: the same file served twice, at 640 and at 320 (two sessions, two warm-ups);
- ``https-cached``: one ``https://`` model whose verified copy is already in the cache
  (start-up re-hashes it, nothing is downloaded);
- ``https-download``: the same with an empty cache (download + verify + move into place);
- ``gs-download``: one ``gs://`` model from ``gcp-storage-emulator`` with an empty cache
  (only where the emulator is installed: the ``[test]`` extra).

The HTTPS server (``drivers/https_files.py``) and the emulator run on 127.0.0.1. A second
table times ``sources.resolve`` alone in this process (``--resolve-runs`` interleaved
rounds): the fetch/verify part of each configuration without the process start around it.

    python -m bench.model_start [--runs 3] [--resolve-runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    LOOPBACK,
    emit,
    find_model,
    free_port,
    load,
    start_server,
    stop_server,
    summary,
    table,
    wait_ready,
)
from drivers.https_files import HttpsFileServer
from rtc_server.engine.artifacts import sha256_of
from rtc_server.engine.model_sources import parse_spec, resolve


def _emulator(model: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """gcp-storage-emulator with the model uploaded, or None where it is not installed."""
    binary = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent))
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
    except ImportError:
        return None
    if binary is None:
        return None
    port = free_port()
    proc = subprocess.Popen([binary, "start", "--host", LOOPBACK, "--port", str(port), "--in-memory",
                             "--default-bucket", "models", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = f"http://{LOOPBACK}:{port}"
    for _ in range(300):
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    client = storage.Client(project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": host})
    client.bucket("models").blob("yolo11n.onnx").upload_from_filename(str(model))
    return proc, host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--resolve-runs", type=int, default=10)
    args = parser.parse_args()
    load_start = load()
    model = find_model()
    digest = sha256_of(model)
    with tempfile.TemporaryDirectory(prefix="issue-11-models-bench-") as tmp_name, \
            HttpsFileServer(Path(tmp_name) / "tls", {"/yolo11n.onnx": model.read_bytes()}) as https:
        tmp = Path(tmp_name)
        emulator = _emulator(model, tmp)
        https_spec = f"yolo11n={https.url}/yolo11n.onnx#sha256={digest}"
        configs: dict[str, dict[str, str]] = {
            "local": {"RTC_MODELS": f"yolo11n={model}"},
            "two": {"RTC_MODELS": f"yolo11n={model},yolo11n-320={model}#imgsz=320"},
            "https-cached": {"RTC_MODELS": https_spec, "SSL_CERT_FILE": str(https.cert),
                             "RTC_MODEL_CACHE": str(tmp / "warm-cache")},
            "https-download": {"RTC_MODELS": https_spec, "SSL_CERT_FILE": str(https.cert)},
        }
        if emulator is not None:
            configs["gs-download"] = {"RTC_MODELS": f"yolo11n=gs://models/yolo11n.onnx#sha256={digest}",
                                      "STORAGE_EMULATOR_HOST": emulator[1]}
        results: dict[str, list[float]] = {name: [] for name in configs}
        resolve_ms = _time_resolve(model, digest, https, emulator, tmp, args.resolve_runs)
        try:
            for run in range(args.runs + 1):  # round 0 fills the warm cache and is not counted
                for name, env in configs.items():
                    env = dict(env)
                    env.setdefault("RTC_MODEL_CACHE", str(tmp / f"cache-{name}-{run}"))
                    server = start_server(model, env=env)
                    try:
                        ready = wait_ready(server, timeout=120)
                    finally:
                        stop_server(server)
                    if run:
                        results[name].append(ready)
                        print(f"  round {run}: {name}: ready after {ready:.2f} s", flush=True)
        finally:
            if emulator is not None:
                emulator[0].terminate()
                emulator[0].wait(10)
    stats = {name: summary(values) for name, values in results.items()}
    base = stats["local"]["p50"]
    rows = [[name, s["p50"], s["min"], s["max"], s["p50"] - base] for name, s in stats.items()]
    if emulator is None:
        rows.append(["gs-download", "not measured (no gcp-storage-emulator)", "", "", ""])
    print(table(["configuration", "median s", "min s", "max s", "vs local s"], rows))
    resolved = {name: summary(values) for name, values in resolve_ms.items()}
    print(table(["sources.resolve", "median ms", "min ms", "max ms"],
                [[name, s["p50"], s["min"], s["max"]] for name, s in resolved.items()]))
    emit("model_start", {"runs": args.runs, "ready_s": stats, "resolve_ms": resolved}, load_start)


def _time_resolve(model: Path, digest: str, https: HttpsFileServer, emulator: tuple[object, str] | None,
                  tmp: Path, runs: int) -> dict[str, list[float]]:
    """``resolve`` alone, interleaved: local (+ pinned hash), cached copy, https and gs downloads."""
    import os

    os.environ["SSL_CERT_FILE"] = str(https.cert)
    specs = {"local, hash pinned": parse_spec(f"{model}#sha256={digest}"),
             "https, verified copy cached": parse_spec(f"{https.url}/yolo11n.onnx#sha256={digest}"),
             "https, download": parse_spec(f"{https.url}/yolo11n.onnx#sha256={digest}")}
    if emulator is not None:
        os.environ["STORAGE_EMULATOR_HOST"] = emulator[1]
        specs["gs, download"] = parse_spec(f"gs://models/yolo11n.onnx#sha256={digest}")
        resolve(specs["gs, download"], tmp / "gs-import")  # the client library's import, once
    resolve(specs["https, verified copy cached"], tmp / "resolve-warm")
    times: dict[str, list[float]] = {name: [] for name in specs}
    for run in range(runs):
        for i, (name, spec) in enumerate(specs.items()):
            cache = tmp / "resolve-warm" if "cached" in name else tmp / f"resolve-{run}-{i}"  # empty: downloads
            started = time.perf_counter()
            resolve(spec, cache)
            times[name].append((time.perf_counter() - started) * 1000)
    return times


if __name__ == "__main__":
    main()
