"""The real process: ``python -m rtc_server`` with TLS, JSON logs, SIGTERM, model failures,
and a client process that vanishes (SIGKILL) mid-stream."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import aioice.ice
import numpy as np
import pytest
from aiohttp import web

from drivers.client import DetectionClient, ImageTrack
from rtc_server.signaling.context import REGISTRY
from rtc_server.webrtc.ice import use_host_addresses

from .helpers import FIXTURES, ROOT, ServerFactory, ServerProcess, self_signed, serve, wait_for, wait_ready

#: What the server logs when a shutdown phase runs into its deadline instead of finishing:
#: a session's source that did not stop (``Stream._close``), a task that would not end.
DEADLINE_LOGS = ("did not stop within", "session_close_timeout", "Task was destroyed", "timed out")


def assert_no_deadline_ran_out(log: str) -> None:
    hits = [line for line in log.splitlines() if any(text in line for text in DEADLINE_LOGS)]
    assert not hits, hits


async def test_tls_json_logs_and_sigterm_finishes_the_request_in_flight(
    spawn: Callable[..., ServerProcess], model_file: Path, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    # A /predict queue with room for all eight, and no queue deadline to speak of: this is
    # about shutdown, not admission (tests/test_scheduler.py).
    server = spawn({"RTC_MODEL": str(model_file), "RTC_LOG_FORMAT": "json", "RTC_PREDICT_QUEUE": "8",
                    "RTC_PREDICT_MAX_WAIT": "60"}, ("--cert", str(cert), "--key", str(key)))
    trust = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{server.port}"
    await wait_ready(base, server, trust)

    # Eight large /predict requests queue for the one inference worker (~1 s of work), all
    # sent before SIGTERM: they are in flight when it arrives and must all be answered.
    # (aiohttp stops reading sockets at shutdown, so only fully-sent requests count.)
    import cv2

    bus = cv2.imread(str(FIXTURES / "bus.jpg"))
    big = cv2.imencode(".jpg", cv2.resize(bus, (3000, 4000)), [cv2.IMWRITE_JPEG_QUALITY, 30])[1].tobytes()
    async with aiohttp.ClientSession() as http:
        async def predict() -> tuple[int, dict]:
            async with http.post(f"{base}/predict", data=big, ssl=trust,
                                 headers={"Content-Type": "image/jpeg"}) as r:
                return r.status, await r.json()

        requests = [asyncio.create_task(predict()) for _ in range(8)]
        # Once one is answered the server is working through the queue (the uploads, small
        # and parallel, are in); SIGTERM now finds the others in flight.
        await asyncio.wait(requests, return_when=asyncio.FIRST_COMPLETED)
        pending = sum(not r.done() for r in requests)
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*requests)
    assert pending > 0, "every request finished before SIGTERM: nothing was in flight"
    assert [status for status, _ in answers] == [200] * 8, answers
    assert all("bus" in {d["label"] for d in body["detections"]} for _, body in answers)

    # Shutdown fits Cloud Run's 10 s by construction when every phase ends by its own event
    # (the requests answered, each session closed through its normal path), not by a deadline:
    # a phase that ran into its deadline says so in the log. So that is what is checked —
    # not this machine's speed; the wait is a guard against a hang only.
    code = await asyncio.to_thread(server.wait, 60)
    assert code == 0, server.log
    print(f"shutdown took {time.monotonic() - sigterm_at:.1f} s")
    assert_no_deadline_ran_out(server.log)
    lines = [json.loads(line) for line in server.log.splitlines() if line.startswith("{")]
    assert lines and all({"severity", "message", "time"} <= set(line) for line in lines), server.log
    assert any("exited cleanly" in line["message"] for line in lines)
    assert any(line["message"].startswith("serving https://") for line in lines)


async def test_sigterm_closes_live_sessions_and_exits_zero(
    spawn: Callable[..., ServerProcess], model_file: Path, bus_frame: np.ndarray
) -> None:
    use_host_addresses(["127.0.0.1"])  # our in-process clients: loopback only (no create_app here)
    server = spawn({"RTC_MODEL": str(model_file), "RTC_LOG_FORMAT": "json"})
    base = f"http://127.0.0.1:{server.port}"
    await wait_ready(base, server)
    clients = [DetectionClient(base, ImageTrack(bus_frame, fps=15)) for _ in range(2)]
    try:
        for client in clients:
            await client.connect()
            await client.next_message()
        sigterm_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.wait, 60)  # a guard against a hang only
        assert code == 0, server.log
        print(f"shutdown took {time.monotonic() - sigterm_at:.1f} s")
        assert_no_deadline_ran_out(server.log)
        closed = [json.loads(line) for line in server.log.splitlines()
                  if line.startswith("{") and '"closed: closed by server' in line]
        assert {line["session_id"] for line in closed} == {c.session_id for c in clients}, server.log
        await wait_for(lambda: all(c.channel.readyState == "closed" for c in clients), timeout=15)
    finally:
        for client in clients:
            await client.close()


def _model_without_boxes(path: Path) -> None:
    """A valid ONNX model whose output is [1, 84] — not a YOLO detection head."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0, name="mean"),
         helper.make_node("Pad", ["m", "pads"], ["padded"], name="pad"),
         helper.make_node("Reshape", ["padded", "shape"], ["output0"], name="reshape")],
        "not_yolo", [x], [y], initializer=[shape, helper.make_tensor("pads", TensorProto.INT64, [4], [0, 0, 0, 81])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.mark.parametrize("case", ["missing", "corrupt", "wrong_shape"])
def test_model_load_failure_says_what_is_wrong_and_exits_nonzero(
    spawn: Callable[..., ServerProcess], tmp_path: Path, case: str
) -> None:
    path = tmp_path / f"{case}.onnx"
    if case == "corrupt":
        path.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    elif case == "wrong_shape":
        _model_without_boxes(path)
    server = spawn({"RTC_MODEL": str(path)})
    code = server.wait(60)
    expected = {"missing": "model file not found", "corrupt": "cannot load",
                "wrong_shape": "is not a YOLO detection export"}[case]
    assert code == 1, server.log
    assert expected in server.log and str(path) in server.log, server.log
    assert "Traceback" not in server.log


def test_bad_config_exits_2(spawn: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = spawn({"RTC_MAX_SESSIONS": "-1"})
    assert server.wait(60) == 2 and "max_sessions" in server.log, server.log
    server = spawn({"RTC_CERT": str(tmp_path / "nope.pem")})
    assert server.wait(60) == 2 and "cert and key go together" in server.log, server.log


CLIENT_SCRIPT = """
import asyncio, sys
import cv2
from drivers.client import DetectionClient, ImageTrack
from rtc_server.webrtc.ice import use_host_addresses

async def main():
    use_host_addresses(["127.0.0.1"])
    frame = cv2.cvtColor(cv2.imread(sys.argv[2]), cv2.COLOR_BGR2RGB)
    client = DetectionClient(sys.argv[1], ImageTrack(cv2.resize(frame, (640, 480)), fps=15))
    await client.connect()
    await client.next_message()
    print(client.session_id, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_client_killed_mid_stream_is_reaped_by_ice_consent(
    aiohttp_server: ServerFactory, make_app: Callable[..., web.Application], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL leaves no goodbye: the server finds out from ICE consent freshness (aioice:
    six missed checks, one every 5 s, so ~30 s; here one every 1 s, the same path in ~6 s).

    ``idle_timeout`` is set far out so that consent, not the no-frames reaper, must do it.
    """
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 1)  # read by each check's sleep
    app = make_app(idle_timeout=300.0)
    url = await serve(aiohttp_server, app)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT_SCRIPT, url, str(FIXTURES / "bus.jpg"), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        session_id = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        session = app[REGISTRY].get(session_id)
        assert session is not None and session.source.pc.connectionState == "connected"
        proc.kill()
        await proc.wait()
        killed_at = time.monotonic()
        await wait_for(lambda: len(app[REGISTRY]) == 0, timeout=45)
        print(f"vanished peer reaped after {time.monotonic() - killed_at:.1f} s ({session.close_reason})")
        assert session.close_reason in ("connection failed", "connection closed", "track ended")
        assert session.source.pc.connectionState == "closed"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


