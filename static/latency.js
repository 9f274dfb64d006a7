// End-to-end latency, frame by frame: "this frame was sent at t0, its detections were drawn
// at t1". The sender side (rtp-worker.js) reports each encoded frame's RTP timestamp; the
// server echoes `pts` = that frame's RTP timestamp minus the stream's first one (aiortc's
// convention, 90 kHz). Subtracting our own first RTP timestamp makes the two comparable.

const RTP_WRAP = 2 ** 32;

export function now() {
  // The same clock the worker uses (performance.timeOrigin + performance.now()).
  return performance.timeOrigin + performance.now();
}

export class FrameClock {
  constructor(capacity = 900) {
    this.capacity = capacity;  // 30 s of frames at 30 fps: replies older than that are not matched
    this.sentAt = new Map();
    this.firstRtp = null;
    this.sent = 0;
  }

  noteSent(rtp, sentAt) {
    if (typeof rtp !== "number") return;
    if (this.firstRtp === null) this.firstRtp = rtp;
    this.sentAt.set((rtp - this.firstRtp + RTP_WRAP) % RTP_WRAP, { sentAt, index: this.sent });
    this.sent += 1;
    if (this.sentAt.size > this.capacity) this.sentAt.delete(this.sentAt.keys().next().value);
  }

  /**
   * For the frame with this `pts`: milliseconds from sent to `drawnAt`, and its index among
   * the frames we sent (on a lossless path, the server's `frame_id` of the same frame).
   * Null when the pts matches no frame we sent (reply too old, or no transform).
   */
  match(pts, drawnAt) {
    if (typeof pts !== "number") return null;
    const sent = this.sentAt.get(pts % RTP_WRAP);
    return sent === undefined ? null : { ms: drawnAt - sent.sentAt, sentIndex: sent.index };
  }
}

/** Wire an encoded transform on `sender`; returns the worker (terminate it on teardown) or null. */
export function watchSentFrames(sender, clock) {
  const supported = "RTCRtpScriptTransform" in window || "createEncodedStreams" in RTCRtpSender.prototype;
  if (!supported) return null;
  const worker = new Worker("/static/rtp-worker.js");
  worker.onmessage = (event) => clock.noteSent(event.data.rtp, event.data.sentAt);
  if ("RTCRtpScriptTransform" in window) {
    sender.transform = new RTCRtpScriptTransform(worker, {});
  } else {
    const { readable, writable } = sender.createEncodedStreams();
    worker.postMessage({ readable, writable }, [readable, writable]);
  }
  return worker;
}

/** Whether the legacy API needs the peer connection created with encodedInsertableStreams. */
export function needsInsertableStreamsFlag() {
  return !("RTCRtpScriptTransform" in window) && "createEncodedStreams" in RTCRtpSender.prototype;
}
