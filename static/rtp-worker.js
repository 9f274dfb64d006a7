// Runs in a Worker as the video sender's encoded transform. Every encoded frame passes
// through untouched; on its way to the packetizer we note its RTP timestamp and the time,
// so the page can match the server's echoed `pts` to the moment this frame was sent.
"use strict";

function pump(readable, writable) {
  const note = new TransformStream({
    transform(frame, controller) {
      // timeOrigin + now(): a clock the page (another global) can compare with its own.
      const sentAt = performance.timeOrigin + performance.now();
      const metadata = frame.getMetadata ? frame.getMetadata() : {};
      const rtp = metadata.rtpTimestamp ?? frame.timestamp;
      self.postMessage({ rtp, sentAt });
      controller.enqueue(frame);
    },
  });
  readable.pipeThrough(note).pipeTo(writable).catch(() => {});  // ends when the sender stops
}

// Standard API (RTCRtpScriptTransform): the browser hands us the streams.
self.onrtctransform = (event) => pump(event.transformer.readable, event.transformer.writable);
// Chrome's older API (createEncodedStreams): the page transfers the streams to us.
// {clock: true} asks for this global's clock, so the page (and tests) can check it agrees.
self.onmessage = (event) => {
  if (event.data.clock) self.postMessage({ clock: performance.timeOrigin + performance.now() });
  else pump(event.data.readable, event.data.writable);
};
