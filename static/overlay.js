// Draws detections over the video. Boxes arrive in pixels of the frame the server received
// (msg.width x msg.height, which can differ from what the camera captures while Chrome's
// bandwidth estimate ramps up), so they are scaled to the displayed size here.

export function colour(classId) {
  return `hsl(${(classId * 47) % 360} 90% 55%)`;
}

/** Draw `msg.detections`; returns what was drawn, in display pixels, for the page state. */
export function drawDetections(canvas, video, msg) {
  const ctx = canvas.getContext("2d");
  const w = video.clientWidth, h = video.clientHeight;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const sx = w / msg.width, sy = h / msg.height;
  ctx.lineWidth = 2; ctx.font = "600 13px system-ui, sans-serif"; ctx.textBaseline = "top";
  const drawn = [];
  for (const d of msg.detections) {
    const [x1, y1, x2, y2] = d.box;
    const box = { x: x1 * sx, y: y1 * sy, w: (x2 - x1) * sx, h: (y2 - y1) * sy };
    const c = colour(d.class_id), text = `${d.label} ${(d.score * 100).toFixed(0)}%`;
    ctx.strokeStyle = c; ctx.strokeRect(box.x, box.y, box.w, box.h);
    const tw = ctx.measureText(text).width + 8, ty = box.y >= 18 ? box.y - 18 : box.y;
    ctx.fillStyle = c; ctx.fillRect(box.x - 1, ty, tw, 18);
    ctx.fillStyle = "#000"; ctx.fillText(text, box.x + 3, ty + 3);
    drawn.push({ label: d.label, class_id: d.class_id, score: d.score, colour: c, ...box });
  }
  return drawn;
}

export function clearOverlay(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}
