"""Packet-level tests of the marker-bit release, on real RTP packets from aiortc's encoders.

Each test encodes real frames (VP8, H.264 or Opus) with aiortc's own encoders, wraps each
payload in a serialized-and-parsed RTP packet, depayloads it exactly as aiortc's receiver
does before ``JitterBuffer.add()``, and decodes what the buffer releases with aiortc's
decoders: a wrong or empty frame shows up as a decode failure, not just a count.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import aiortc.rtcrtpreceiver
import av
import numpy as np
import pytest
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import depayload, get_decoder, get_encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from rtc_server.webrtc.marker_release import (
    COUNTS,
    STOCK_JITTER_BUFFER,
    MarkerReleaseJitterBuffer,
    is_h264_frame_start,
    is_vp8_frame_start,
    is_vp8_keyframe_start,
    marker_release_active,
    use_marker_release,
)

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102,
                             parameters={"packetization-mode": "1", "level-asymmetry-allowed": "1",
                                         "profile-level-id": "42e01f"})
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


@dataclass
class EncodedFrame:
    timestamp: int
    packets: list[RtpPacket]

    @property
    def data(self) -> bytes:
        return b"".join(p._data for p in self.packets)  # type: ignore[attr-defined]


def rtp(codec: RTCRtpCodecParameters, seq: int, timestamp: int, payload: bytes, marker: bool,
        padding: int = 0) -> RtpPacket:
    """A packet as the receiver sees it: parsed from the wire, then depayloaded."""
    packet = RtpPacket(payload_type=codec.payloadType, marker=int(marker), sequence_number=seq % 65536,
                       timestamp=timestamp, ssrc=0x1234, payload=payload)
    packet.padding_size = padding
    parsed = RtpPacket.parse(packet.serialize())
    parsed._data = depayload(codec, parsed.payload) if parsed.payload else b""  # type: ignore[attr-defined]
    return parsed


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Noisy 320x240 frames that change every time: big enough for multi-packet frames."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    return [np.roll(base, 7 * i, axis=1) for i in range(count)]


def encode(codec: RTCRtpCodecParameters, count: int, first_seq: int = 1000,
           keyframes: Sequence[int] = ()) -> list[EncodedFrame]:
    """``count`` real frames (30 fps), packetized with consecutive sequence numbers."""
    encoder = get_encoder(codec)
    frames: list[EncodedFrame] = []
    seq = first_seq
    for i, image in enumerate(images(count)):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=i in keyframes)
        packets = [rtp(codec, seq + k, timestamp, p, marker=k == len(payloads) - 1) for k, p in enumerate(payloads)]
        seq += len(payloads)
        frames.append(EncodedFrame(timestamp, packets))
    return frames


def video_buffer() -> MarkerReleaseJitterBuffer:
    return MarkerReleaseJitterBuffer(capacity=512, is_video=True)  # what aiortc builds for video


def feed(buffer: JitterBuffer, packets: Iterable[RtpPacket]) -> list[tuple[int, JitterFrame | None]]:
    """(sequence number of the packet just added, frame released by it) for each packet."""
    return [(p.sequence_number, buffer.add(p)[1]) for p in packets]


def decode_all(codec: RTCRtpCodecParameters, frames: Iterable[JitterFrame]) -> int:
    decoder = get_decoder(codec)
    decoded = 0
    for frame in frames:
        decoded += len(decoder.decode(frame))  # raises on a corrupt or empty frame
    return decoded


def released(results: list[tuple[int, JitterFrame | None]]) -> list[JitterFrame]:
    return [f for _, f in results if f is not None]


def test_frames_are_multi_packet() -> None:
    """The fixtures are meaningful: frames span several packets, keyframe starts are seen."""
    frames = encode(VP8, 3)
    assert all(len(f.packets) >= 2 for f in frames), [len(f.packets) for f in frames]
    assert is_vp8_keyframe_start(frames[0].packets[0])
    assert is_vp8_frame_start(frames[1].packets[0]) and not is_vp8_keyframe_start(frames[1].packets[0])
    assert not is_vp8_frame_start(frames[1].packets[1])


def test_complete_frame_is_released_on_its_marker_packet() -> None:
    frames = encode(VP8, 5)
    marker, stock = video_buffer(), JitterBuffer(capacity=512, is_video=True)
    out: list[JitterFrame] = []
    for frame in frames:
        results = feed(marker, frame.packets)
        # nothing before the marker packet, this very frame on it
        assert [f for _, f in results[:-1]] == [None] * (len(frame.packets) - 1)
        last = results[-1][1]
        assert last is not None and last.timestamp == frame.timestamp and last.data == frame.data
        out.append(last)
    # aiortc's stock rule releases each frame only when the next one starts
    stock_results = feed(stock, [p for f in frames for p in f.packets])
    stock_at = [seq for seq, f in stock_results if f is not None]
    assert stock_at == [f.packets[0].sequence_number for f in frames[1:]]
    assert decode_all(VP8, out) == len(frames)


def test_out_of_order_packets_wait_until_the_frame_is_whole() -> None:
    frames = encode(VP8, 3)
    buffer = video_buffer()
    assert released(feed(buffer, frames[0].packets))[0].timestamp == frames[0].timestamp
    packets = frames[1].packets
    order = [packets[-1], *reversed(packets[:-1])]  # marker first, then the rest backwards
    results = feed(buffer, order)
    assert [f for _, f in results[:-1]] == [None] * (len(order) - 1)
    assert results[-1][1] is not None and results[-1][1].data == frames[1].data
    assert released(feed(buffer, frames[2].packets))[0].timestamp == frames[2].timestamp


def test_lost_packet_recovered_late_releases_both_frames_in_order() -> None:
    frames = encode(VP8, 4)
    buffer = video_buffer()
    out = released(feed(buffer, frames[0].packets))
    missing = frames[1].packets[1]
    rest = [p for p in frames[1].packets if p is not missing]
    assert released(feed(buffer, rest + frames[2].packets)) == []  # a hole: nothing may pass
    retransmitted = buffer.add(missing)[1]
    assert retransmitted is not None and retransmitted.data == frames[1].data
    # frame 2 was complete too: it goes out with the next packet
    out += [retransmitted, *released(feed(buffer, frames[3].packets))]
    assert [f.timestamp for f in out] == [f.timestamp for f in frames]
    assert decode_all(VP8, out) == len(frames)


@pytest.mark.parametrize("lost_index", [0, 1])
def test_keyframe_after_loss_resynchronises_at_once(lost_index: int) -> None:
    frames = encode(VP8, 7, keyframes=[4])
    buffer = video_buffer()
    out = released(feed(buffer, frames[0].packets))
    lost = frames[1].packets[lost_index]  # never arrives: frames 1..3 cannot be decoded
    before = COUNTS.keyframe_resync
    assert released(feed(buffer, [p for f in frames[1:4] for p in f.packets if p is not lost])) == []
    results = feed(buffer, frames[4].packets)
    assert results[-1][1] is not None and results[-1][1].timestamp == frames[4].timestamp
    assert COUNTS.keyframe_resync == before + 1
    out.append(results[-1][1])
    for frame in frames[5:]:  # and the marker rule carries on after it
        last = feed(buffer, frame.packets)[-1][1]
        assert last is not None and last.timestamp == frame.timestamp
        out.append(last)
    assert decode_all(VP8, out) == len(out) == 4


def test_stream_starting_mid_frame_waits_for_a_frame_start() -> None:
    frames = encode(VP8, 3)
    buffer = video_buffer()
    # the first packet of the stream was lost: the marker alone proves nothing
    assert released(feed(buffer, frames[0].packets[1:])) == []
    results = feed(buffer, frames[1].packets)
    # the stock rule lets the partial frame 0 go when frame 1 starts (aiortc's behaviour: the
    # decoder error then asks for a keyframe); frame 1 is a known start: out on its marker
    assert results[0][1] is not None and results[0][1].timestamp == frames[0].timestamp
    assert results[-1][1] is not None and results[-1][1].data == frames[1].data


def test_sequence_numbers_wrap_around() -> None:
    frames = encode(VP8, 6, first_seq=65536 - 5)
    seqs = [p.sequence_number for f in frames for p in f.packets]
    assert 65535 in seqs and 0 in seqs  # the fixture really wraps
    buffer = video_buffer()
    out = []
    for frame in frames:
        last = feed(buffer, frame.packets)[-1][1]
        assert last is not None and last.timestamp == frame.timestamp
        out.append(last)
    assert decode_all(VP8, out) == len(frames)


def test_padding_only_packets_are_skipped_not_decoded() -> None:
    frames = encode(VP8, 4)
    buffer = video_buffer()
    out = released(feed(buffer, frames[0].packets))
    # bandwidth-probe padding after frame 0, with frame 0's timestamp, shifting the numbering
    seq = frames[0].packets[-1].sequence_number
    padding = [rtp(VP8, seq + 1 + k, frames[0].timestamp, b"", marker=False, padding=224) for k in range(3)]
    assert released(feed(buffer, padding)) == []
    shifted = [rtp(VP8, seq + 4 + k, p.timestamp, p.payload, bool(p.marker))
               for k, p in enumerate(p for f in frames[1:] for p in f.packets)]
    out += released(feed(buffer, shifted))
    assert [f.timestamp for f in out] == [f.timestamp for f in frames]
    assert all(f.data for f in out)
    assert decode_all(VP8, out) == len(frames)


def test_h264_frames_are_released_on_their_marker_from_the_first() -> None:
    frames = encode(H264, 4)
    assert is_h264_frame_start(frames[0].packets[0]) and is_h264_frame_start(frames[1].packets[0])
    assert is_h264_frame_start(frames[0].packets[1])  # the IDR's first slice (after SPS/PPS)
    assert not any(is_h264_frame_start(p) for p in frames[0].packets[2:-1])  # FU-A fragments
    assert not is_vp8_frame_start(frames[1].packets[0])
    assert not is_h264_frame_start(encode(VP8, 1)[0].packets[0])
    buffer = video_buffer()
    out = []
    for frame in frames:
        results = feed(buffer, frame.packets)
        assert [f for _, f in results[:-1]] == [None] * (len(frame.packets) - 1)
        last = results[-1][1]
        assert last is not None and last.timestamp == frame.timestamp and last.data == frame.data
        out.append(last)
    assert decode_all(H264, out) == len(frames)


def test_h264_stream_joined_mid_frame_falls_back_then_catches_up() -> None:
    frames = encode(H264, 3)
    buffer = video_buffer()
    # joined inside the keyframe (its first two packets lost): no frame start is known
    assert released(feed(buffer, frames[0].packets[2:])) == []
    results = feed(buffer, frames[1].packets)
    assert results[0][1] is not None and results[0][1].timestamp == frames[0].timestamp  # stock rule
    assert results[-1][1] is not None and results[-1][1].timestamp == frames[1].timestamp  # marker again


def test_audio_takes_the_stock_path_even_with_marker_bits() -> None:
    encoder = get_encoder(OPUS)
    packets = []
    for i in range(12):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, fractions.Fraction(1, 48000)
        payloads, timestamp = encoder.encode(frame)
        packets += [rtp(OPUS, 500 + len(packets), timestamp, p, marker=i % 3 == 0) for p in payloads]
    ours, stock = MarkerReleaseJitterBuffer(capacity=16, prefetch=4), JitterBuffer(capacity=16, prefetch=4)
    got = [(s, f.timestamp if f else None, f.data if f else None) for s, f in feed(ours, packets)]
    want = [(s, f.timestamp if f else None, f.data if f else None) for s, f in feed(stock, packets)]
    assert got == want and any(f is not None for _, f, _ in got)


def test_install_and_remove_on_aiortc_receiver_module() -> None:
    try:
        use_marker_release(True)
        assert aiortc.rtcrtpreceiver.JitterBuffer is MarkerReleaseJitterBuffer and marker_release_active()
        use_marker_release(False)
        assert aiortc.rtcrtpreceiver.JitterBuffer is STOCK_JITTER_BUFFER and not marker_release_active()
    finally:
        use_marker_release(True)


@pytest.mark.parametrize(("text", "value"), [("1", True), ("on", True), ("TRUE", True),
                                             ("0", False), ("off", False), ("false", False)])
def test_setting_parses_booleans(text: str, value: bool) -> None:
    from rtc_server.config import load_settings

    assert load_settings([], env={"RTC_MARKER_RELEASE": text}).marker_release is value
    assert load_settings(["--marker-release", text], env={}).marker_release is value


def test_setting_refuses_other_words() -> None:
    from rtc_server.config import ConfigError, load_settings

    with pytest.raises(ConfigError):
        load_settings([], env={"RTC_MARKER_RELEASE": "maybe"})


@pytest.mark.parametrize("seed", [*range(5), 34, 35])
def test_reordered_and_duplicated_stream_comes_out_whole_and_in_order(seed: int) -> None:
    """Neighbouring packets swapped (across frame boundaries too) and some sent twice, as a
    network with reordering and spurious retransmissions would: every frame still comes out
    exactly once, in order, byte for byte, and decodes."""
    stream = encode(VP8, 16)
    frames, tail = stream[:12], stream[12:]
    rng = np.random.default_rng(seed)
    packets = [p for f in frames for p in f.packets]
    for i in range(1, len(packets) - 1):  # the first packet stays first: aiortc drops anything
        if rng.random() < 0.3:            # older than the first packet it saw (both rules do)
            packets[i], packets[i + 1] = packets[i + 1], packets[i]
    arrivals = []
    for p in packets:
        arrivals.append(p)
        if rng.random() < 0.1:
            arrivals.append(p)
    # one packet that completes two frames can hand over only one: the other waits for the
    # next packet, so an orderly tail follows to let every frame out
    out = released(feed(video_buffer(), arrivals + [p for f in tail for p in f.packets]))
    assert [f.timestamp for f in out[:12]] == [f.timestamp for f in frames]
    assert [f.data for f in out[:12]] == [f.data for f in frames]
    assert decode_all(VP8, out) == len(out)


@pytest.mark.parametrize("seed", range(3))
def test_lossy_stream_releases_only_whole_frames_and_recovers_on_keyframes(seed: int) -> None:
    """Packets lost for good in some delta frames: nothing partial or empty ever reaches the
    decoder, and each keyframe after a loss brings the stream back at once."""
    keyframes = [0, 6, 12, 18]
    frames = encode(VP8, 24, keyframes=keyframes)
    rng = np.random.default_rng(seed)
    damaged = {int(i) for i in rng.choice([i for i in range(24) if i not in keyframes], 4, replace=False)}
    arrivals = []
    for i, frame in enumerate(frames):
        lost = int(rng.integers(len(frame.packets))) if i in damaged else -1
        arrivals += [p for k, p in enumerate(frame.packets) if k != lost]
    out = released(feed(video_buffer(), arrivals))
    by_ts = {f.timestamp: f for f in frames}
    assert all(f.data == by_ts[f.timestamp].data for f in out)  # whole frames only
    stamps = [f.timestamp for f in out]
    assert stamps == sorted(set(stamps))
    assert {frames[k].timestamp for k in keyframes} <= set(stamps)
    assert not {frames[k].timestamp for k in damaged} & set(stamps)
    assert decode_all(VP8, out) == len(out)
