"""The parts behind the consumer routes, alone: subscriber queues, stream stats, session
tokens, snapshot conversion."""

from __future__ import annotations

import asyncio

import av
import cv2
import numpy as np
import pytest

from rtc_server.signaling.tokens import SessionTokens
from rtc_server.streams.sinks import Subscriber, SubscriptionEnded
from rtc_server.streams.snapshot import UnsupportedFrame, encode_jpeg, to_bgr
from rtc_server.streams.stats import MAX_ENTRIES, StreamStats


async def test_subscriber_is_bounded_newest_wins_and_drains_on_close() -> None:
    sub = Subscriber("sse", maxsize=3)
    for i in range(10):
        sub.send({"n": i})
    assert sub.queued == 3 and sub.lost == 7
    assert [await sub.next() for _ in range(2)] == [{"n": 7}, {"n": 8}]
    assert await sub.next(timeout=0.01) == {"n": 9}
    assert await sub.next(timeout=0.01) is None  # nothing within the timeout: keep-alive cue
    ended = []
    sub.on_close(lambda: ended.append(True))
    sub.send({"n": 10})
    sub.close()
    sub.send({"n": 11})  # after close: ignored
    assert await sub.next() == {"n": 10}  # what was queued is still handed out
    with pytest.raises(SubscriptionEnded):
        await sub.next()
    assert ended == [True] and sub.describe()["delivered"] == 4 and sub.describe()["lost"] == 7


async def test_a_waiting_subscriber_wakes_on_a_message_and_on_close() -> None:
    sub = Subscriber("ws")
    waiting = asyncio.ensure_future(sub.next())
    await asyncio.sleep(0)
    sub.send({"hello": 1})
    assert await waiting == {"hello": 1}
    waiting = asyncio.ensure_future(sub.next())
    await asyncio.sleep(0)
    sub.end("client closed")
    with pytest.raises(SubscriptionEnded):
        await waiting
    assert sub.end_reason == "client closed"


def test_stream_stats_rates_and_medians_over_the_window() -> None:
    now = [100.0]
    stats = StreamStats(clock=lambda: now[0], window=5.0)
    assert stats.summary()["received_fps"] == 0.0 and stats.summary()["server_ms_p50"] is None
    for i in range(300):  # 10 s at 30 fps, a detection for every other frame
        t = 100.0 + i / 30
        stats.received(t)
        if i % 2 == 0:
            stats.processed(t, server_ms=20.0 + (i % 3))
    now[0] = 110.0
    stats.reported_e2e(40.0)
    stats.reported_e2e(60.0)
    s = stats.summary()
    assert s["received_fps"] == pytest.approx(30, abs=0.5) and s["processed_fps"] == pytest.approx(15, abs=0.5)
    assert s["server_ms_p50"] == 21.0 and s["e2e_ms_p50"] == 50.0
    now[0] = 200.0  # long quiet: everything aged out
    assert stats.summary() == {"window_s": 5.0, "received_fps": 0.0, "processed_fps": 0.0,
                               "server_ms_p50": None, "e2e_ms_p50": None}
    for _ in range(MAX_ENTRIES * 3):  # a flood stays within the bound
        stats.received(200.0)
    assert len(stats._received._entries) == MAX_ENTRIES


def test_session_tokens_are_scoped_signed_and_expire() -> None:
    now = [1_000_000.0]
    tokens = SessionTokens("a-secret-of-sixteen+", ttl=60, clock=lambda: now[0])
    token, expires = tokens.issue("abc")
    assert expires == 1_000_060
    assert tokens.valid(token, "abc")
    assert not tokens.valid(token, "abd")  # another session
    assert not SessionTokens("another-secret-16+", clock=lambda: now[0]).valid(token, "abc")  # another key
    session_id, stamp, signature = token.rsplit(".", 2)  # <session id>.<expires>.<signature>
    assert session_id == "abc"
    assert not tokens.valid(f"abc.{int(stamp) + 1000}.{signature}", "abc")  # a forged expiry
    for junk in ("", ".", "..", "abc", "abc.12.", "abc..sig", "abc.１２.sig", f"abc.².{signature}",
                 f"abc.{'9' * 40}.{signature}", f"{stamp}.{signature}"):
        assert not tokens.valid(junk, "abc"), junk
    now[0] += 61
    assert not tokens.valid(token, "abc")  # expired
    random_key = SessionTokens()  # no secret configured: a random key per process
    assert random_key.valid(random_key.issue("x")[0], "x") and not SessionTokens().valid(random_key.issue("x")[0], "x")


@pytest.mark.parametrize("size", [(640, 480), (641, 479)])
def test_snapshot_reads_frames_without_reformatting_them(bus_frame: np.ndarray, size: tuple[int, int]) -> None:
    """yuv420p as decoders give it (odd sizes too), nv12, rgb24; the source frame is untouched."""
    rgb = cv2.resize(bus_frame, size)
    reference = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for fmt in ("yuv420p", "nv12", "rgb24", "bgr24", "rgba"):
        if fmt == "nv12" and size[0] % 2:
            continue  # nv12 needs even sizes
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
        colour = (frame.colorspace, frame.color_range)
        bgr = to_bgr(frame)
        h, w = bgr.shape[:2]
        assert (w, h) == ((size[0] & ~1, size[1] & ~1) if fmt == "yuv420p" else size)
        error = np.abs(bgr.astype(int) - reference[:h, :w].astype(int)).mean()
        assert error < 6, (fmt, error)  # chroma subsampling, not a wrong conversion
        assert (frame.colorspace, frame.color_range) == colour
    jpeg = encode_jpeg(rgb)
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (size[1], size[0], 3)
    with pytest.raises(UnsupportedFrame):
        to_bgr(av.VideoFrame(64, 64, "yuv444p"))


def test_session_tokens_stay_out_of_the_logs() -> None:
    import logging

    from rtc_server.logs import TokenRedactor

    record = logging.LogRecord("aiohttp.access", logging.INFO, __file__, 1, '%s "%s" %d',
                               ("127.0.0.1", "GET /sessions/ab/events?token=1767.aB-_x9&v=1 HTTP/1.1", 200), None)
    assert TokenRedactor().filter(record)
    assert record.getMessage() == '127.0.0.1 "GET /sessions/ab/events?token=<redacted>&v=1 HTTP/1.1" 200'
