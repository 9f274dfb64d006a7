// Draws detections over the video. Boxes arrive in pixels of the frame the server received
// (msg.width x msg.height, which can differ from what the camera captures while Chrome's
// bandwidth estimate ramps up), so they are scaled to the displayed size here.
//
// Tracks (issue 21): a detection with a track_id is labelled "#id" and leaves a short trail
// of its box's bottom centre (the point lines and zones count); the stream's zones and lines
// (fractions 0-1 of the frame) are drawn under the boxes, with the one being drawn by clicks.

export function colour(classId) {
  return `hsl(${(classId * 47) % 360} 90% 55%)`;
}

const TRAIL_POINTS = 20;   // bottom-centre points kept per track
const TRAIL_STALE = 30;    // messages a track may be unseen before its trail is dropped
const trails = new WeakMap();  // canvas -> {tick, tracks: Map(id -> {points, seen})}

function trailsOf(canvas) {
  let t = trails.get(canvas);
  if (!t) { t = { tick: 0, tracks: new Map() }; trails.set(canvas, t); }
  return t;
}

/** Draw the zones and lines (normalised), and `pending` (a shape being clicked). */
function drawShapes(ctx, w, h, shapes) {
  if (!shapes) return;
  ctx.save();
  ctx.lineWidth = 2; ctx.font = "600 12px system-ui, sans-serif"; ctx.textBaseline = "bottom";
  for (const z of shapes.zones || []) {
    ctx.beginPath();
    z.polygon.forEach(([x, y], i) => (i ? ctx.lineTo(x * w, y * h) : ctx.moveTo(x * w, y * h)));
    ctx.closePath();
    ctx.fillStyle = "rgba(255, 235, 59, 0.12)"; ctx.fill();
    ctx.strokeStyle = "#ffeb3b"; ctx.stroke();
    ctx.fillStyle = "#ffeb3b"; ctx.fillText(z.name, z.polygon[0][0] * w + 4, z.polygon[0][1] * h + 16);
  }
  for (const l of shapes.lines || []) {
    ctx.strokeStyle = "#ff4081"; ctx.setLineDash([8, 5]);
    ctx.beginPath(); ctx.moveTo(l.a[0] * w, l.a[1] * h); ctx.lineTo(l.b[0] * w, l.b[1] * h); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#ff4081"; ctx.fillText(`${l.name} (a)`, l.a[0] * w + 4, l.a[1] * h + 16);
  }
  const p = shapes.pending;
  if (p && p.points.length) {
    ctx.strokeStyle = "#fff"; ctx.fillStyle = "#fff"; ctx.setLineDash([4, 4]);
    ctx.beginPath();
    p.points.forEach(([x, y], i) => (i ? ctx.lineTo(x * w, y * h) : ctx.moveTo(x * w, y * h)));
    ctx.stroke(); ctx.setLineDash([]);
    for (const [x, y] of p.points) { ctx.beginPath(); ctx.arc(x * w, y * h, 4, 0, 2 * Math.PI); ctx.fill(); }
  }
  ctx.restore();
}

function prepare(canvas, video) {
  const ctx = canvas.getContext("2d");
  const w = video.clientWidth, h = video.clientHeight;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

/** Draw `msg.detections` (and `shapes`, if any); returns what was drawn, in display pixels. */
export function drawDetections(canvas, video, msg, shapes = null) {
  const { ctx, w, h } = prepare(canvas, video);
  drawShapes(ctx, w, h, shapes);
  const sx = w / msg.width, sy = h / msg.height;
  const t = trailsOf(canvas);
  t.tick += 1;
  for (const d of msg.detections) {  // trails first, under the boxes
    if (d.track_id === null || d.track_id === undefined || d.predicted) continue;
    const [x1, , x2, y2] = d.box;
    let track = t.tracks.get(d.track_id);
    if (!track) { track = { points: [], seen: 0 }; t.tracks.set(d.track_id, track); }
    track.seen = t.tick;
    track.points.push([(x1 + x2) / 2 / msg.width, y2 / msg.height]);
    if (track.points.length > TRAIL_POINTS) track.points.shift();
  }
  for (const [id, track] of t.tracks) {
    if (t.tick - track.seen > TRAIL_STALE) { t.tracks.delete(id); continue; }
    if (track.points.length < 2) continue;
    ctx.strokeStyle = "rgba(255, 255, 255, 0.7)"; ctx.lineWidth = 2;
    ctx.beginPath();
    track.points.forEach(([x, y], i) => (i ? ctx.lineTo(x * w, y * h) : ctx.moveTo(x * w, y * h)));
    ctx.stroke();
  }
  ctx.lineWidth = 2; ctx.font = "600 13px system-ui, sans-serif"; ctx.textBaseline = "top";
  const drawn = [];
  for (const d of msg.detections) {
    const [x1, y1, x2, y2] = d.box;
    const box = { x: x1 * sx, y: y1 * sy, w: (x2 - x1) * sx, h: (y2 - y1) * sy };
    const id = d.track_id === null || d.track_id === undefined ? "" : ` #${d.track_id}`;
    const c = colour(d.class_id), text = `${d.label}${id} ${(d.score * 100).toFixed(0)}%`;
    ctx.strokeStyle = c;
    if (d.predicted) ctx.setLineDash([4, 4]);
    ctx.strokeRect(box.x, box.y, box.w, box.h);
    ctx.setLineDash([]);
    const tw = ctx.measureText(text).width + 8, ty = box.y >= 18 ? box.y - 18 : box.y;
    ctx.fillStyle = c; ctx.fillRect(box.x - 1, ty, tw, 18);
    ctx.fillStyle = "#000"; ctx.fillText(text, box.x + 3, ty + 3);
    drawn.push({ label: d.label, class_id: d.class_id, score: d.score, colour: c, track_id: d.track_id ?? null,
      text, ...box });
  }
  return drawn;
}

/** Redraw only the shapes (e.g. while clicking one, between detection messages). */
export function drawShapesOnly(canvas, video, shapes) {
  const { ctx, w, h } = prepare(canvas, video);
  drawShapes(ctx, w, h, shapes);
}

export function clearOverlay(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  trails.delete(canvas);
}
