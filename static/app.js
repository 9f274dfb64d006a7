// rtc-yolo page: camera -> WebRTC (REST signaling) -> server detections -> canvas overlay.
//
// Everything the page shows is also kept in `window.rtcYolo` (state, what was drawn, every
// overlay figure), so a test driving a real browser can read it instead of scraping pixels.
import { clearOverlay, drawDetections, drawShapesOnly } from "./overlay.js";
import { ShapeEditor } from "./shapes.js";
import * as errors from "./errors.js";
import { FrameClock, needsInsertableStreamsFlag, now, watchSentFrames } from "./latency.js";
import { loadModels, offerFields, onModelChange, showModel } from "./models.js";
import { RollingRate, ms } from "./stats.js";
import { authHeaders, sessionHeaders } from "./auth.js";
import { DETECTION_SERIES, LiveChart } from "./chart.js";
import { initSessions } from "./sessions.js";

const $ = (id) => document.getElementById(id);
const video = $("video"), canvas = $("overlay");
const CONNECT_TIMEOUT_MS = 15000;  // ICE over TURN can take seconds; loopback well under one
const PING_INTERVAL_MS = 1000;  // also how often the page reports its end-to-end figure
const CHART_SAMPLE_MS = 500;
const DISCONNECT_GRACE_MS = 4000;

/** One connection attempt's resources; replaced wholesale on Start, so reconnecting is one click. */
let conn = null;

const state = window.rtcYolo = {
  state: "idle", error: null, sessionId: null, messages: 0, drawn: [], drawnLabels: [],
  stats: {}, config: null, e2e: [], models: [], events: [],
};

/** The last minute of this camera session: end-to-end and server latency, detection rate. */
const cameraChart = new LiveChart($("camera-chart"), DETECTION_SERIES).start();

/** Lines and zones drawn on the video by clicking; sent as a config message (issue 21). */
const shapes = new ShapeEditor(canvas, {
  line: $("draw-line"), zone: $("draw-zone"), finish: $("finish-zone"), clear: $("clear-shapes"), counts: $("counts"),
}, async (fields) => {
  if (!conn || !conn.channel || conn.channel.readyState !== "open") return "connect first";
  send({ type: "config", ...fields });
  return null;
}, () => drawShapesOnly(canvas, video, shapes.shapes));
state.shapes = shapes;
state.charts = { get camera() { return cameraChart.summary(); } };

function setState(name) {
  state.state = name;
  $("stage").dataset.state = name;
  const busy = name === "starting" || name === "connected";
  $("start").disabled = busy;
  $("stop").disabled = !busy;
}

function setStatus(text) { $("status").textContent = text; }

function showError(err) {
  state.error = err ? { kind: err.kind || "error", message: err.message || String(err) } : null;
  $("error").hidden = !err;
  $("error").textContent = err ? err.message || String(err) : "";
}

/** Panel figure -> the element showing it. */
const FIGURES = { fps: "fps", serverMs: "server-ms", breakdown: "breakdown", rttMs: "rtt-ms", e2eMs: "e2e-ms",
  frameSize: "frame-size", dropped: "dropped", model: "model" };

/** Show one panel figure, and keep its value in `window.rtcYolo.stats`. */
function stat(name, value, text) {
  state.stats[name] = value;
  $(FIGURES[name]).textContent = text;
}

// ----- camera --------------------------------------------------------------------------------
function resolution() {
  const [width, height] = $("resolution").value.split("x").map(Number);
  return { width, height };
}

async function openCamera() {
  const { width, height } = resolution();
  const deviceId = $("camera").value;
  const constraints = { width: { ideal: width }, height: { ideal: height },
    ...(deviceId ? { deviceId: { exact: deviceId } } : {}) };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: constraints, audio: false });
    for (const track of stream.getVideoTracks()) track.contentHint = "detail";  // keep resolution, not motion
    return stream;
  } catch (err) {
    throw errors.cameraError(err, $("resolution").value);
  }
}

async function listCameras() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  const select = $("camera"), current = select.value || (conn && conn.deviceId) || "";
  select.replaceChildren(...devices.map((d, i) => new Option(d.label || `camera ${i + 1}`, d.deviceId)));
  if (!devices.length) select.append(new Option("no camera found", ""));
  if (current && devices.some((d) => d.deviceId === current)) select.value = current;
}

/** Camera or resolution changed while running: swap the track in place (no renegotiation). */
async function switchCamera() {
  const c = conn;
  if (!c || !c.sender || state.state !== "connected") return;
  let stream;
  try {
    stream = await openCamera();
  } catch (err) {
    if (conn === c) showError(err);
    return;
  }
  const track = stream.getVideoTracks()[0];
  try {
    if (conn !== c) throw new Error("stopped meanwhile");
    await c.sender.replaceTrack(track);
  } catch (err) {
    stream.getTracks().forEach((t) => t.stop());  // never leave a camera on
    if (conn === c) showError(errors.cameraError(err, $("resolution").value));
    return;
  }
  c.stream.getTracks().forEach((t) => t.stop());
  c.stream = stream; c.deviceId = track.getSettings().deviceId;
  video.srcObject = stream;
  showError(null);
}

// ----- data channel --------------------------------------------------------------------------
function send(message) {
  if (conn && conn.channel && conn.channel.readyState === "open") conn.channel.send(JSON.stringify(message));
}

function onMessage(event) {
  const msg = JSON.parse(event.data);
  if (msg.type === "pong") { const rtt = performance.now() - msg.t; stat("rttMs", rtt, ms(rtt)); return; }
  if (msg.type === "config") { onConfig(msg); return; }
  if (msg.type === "error") { showError(new errors.UserError("server", `Server: ${msg.error}: ${msg.detail}`)); return; }
  if (msg.type === "event") { state.events.push(msg); if (state.events.length > 100) state.events.shift(); return; }
  if (msg.type === "detections") onDetections(msg);
}

function onDetections(msg) {
  const drawn = drawDetections(canvas, video, msg, shapes.shapes);
  const drawnAt = now();
  shapes.setCounts(msg.counts);
  state.messages += 1;
  state.drawn = drawn;
  state.drawnLabels = [...new Set(drawn.map((d) => d.label))].sort();
  state.frame = { frameId: msg.frame_id, pts: msg.pts, width: msg.width, height: msg.height };
  canvas.dataset.labels = state.drawnLabels.join(",");

  const tick = performance.now();
  conn.rate.tick(tick);
  stat("fps", conn.rate.rate, `${conn.rate.rate.toFixed(1)} /s`);
  const t = msg.timing;
  cameraChart.add("server", tick, t.server_ms);
  stat("serverMs", t.server_ms, ms(t.server_ms));
  stat("breakdown", { queue: t.queue_ms, preprocess: t.preprocess_ms, inference: t.inference_ms,
    postprocess: t.postprocess_ms },
  [t.queue_ms, t.preprocess_ms, t.inference_ms, t.postprocess_ms].map((v) => v.toFixed(1)).join(" / ") + " ms");
  stat("frameSize", { width: msg.width, height: msg.height }, `${msg.width}×${msg.height}`);
  if (msg.frames) stat("dropped", msg.frames.dropped, `${msg.frames.dropped} of ${msg.frames.received}`);
  stat("model", msg.model.name, `${msg.model.name} ${msg.model.version || ""}`.trim());

  const match = conn.clock.match(msg.pts, drawnAt);
  if (match !== null) {
    state.e2e.push({ pts: msg.pts, frameId: msg.frame_id, sentIndex: match.sentIndex, e2eMs: match.ms, serverMs: t.server_ms });
    if (state.e2e.length > 300) state.e2e.shift();
    cameraChart.add("e2e", tick, match.ms);
    conn.unreported = true;
    const recent = state.e2e.slice(-30).map((m) => m.e2eMs).sort((a, b) => a - b);
    stat("e2eMs", match.ms, `${ms(match.ms)} · p50 ${recent[recent.length >> 1].toFixed(0)}`);
  } else if (!conn.worker) {
    stat("e2eMs", null, "n/a (no encoded transforms)");
  }
}

/**
 * Tell the server this session's frame-matched end-to-end latency (median of the last 30),
 * once a second when there is something new: only the sender can measure it, and
 * GET /sessions (and whoever watches this session) shows it.
 */
function report(c) {
  if (!c.unreported || !state.e2e.length) return;
  c.unreported = false;
  const recent = state.e2e.slice(-30).map((m) => m.e2eMs).sort((a, b) => a - b);
  send({ type: "report", e2e_ms: Math.round(recent[recent.length >> 1] * 10) / 10 });
}

// ----- live settings -------------------------------------------------------------------------
function onConfig(msg) {
  state.config = { conf: msg.conf, iou: msg.iou, classes: msg.classes, model: msg.model, tracking: msg.tracking,
    zones: msg.zones, lines: msg.lines };
  shapes.setShapes(msg.zones, msg.lines);
  showModel(msg.model);
  $("conf").value = msg.conf; $("conf-value").textContent = Number(msg.conf).toFixed(2);
  $("iou").value = msg.iou; $("iou-value").textContent = Number(msg.iou).toFixed(2);
  const select = $("classes");
  if (Array.isArray(msg.class_names) && select.dataset.names !== msg.class_names.join("\n")) {  // model changed
    select.replaceChildren(...msg.class_names.map((name, id) => new Option(`${id} ${name}`, String(id))));
    select.dataset.names = msg.class_names.join("\n");
  }
  const chosen = new Set(msg.classes || []);
  for (const option of select.options) option.selected = chosen.has(Number(option.value));
  const classes = msg.classes ? msg.classes.map((id) => msg.class_names?.[id] ?? id).join(", ") : "all classes";
  $("config-state").textContent = `Server applies: confidence ≥ ${Number(msg.conf).toFixed(2)}, IoU ${Number(msg.iou).toFixed(2)}, ${classes}.`;
}

function sendConfig() {
  const classes = [...$("classes").selectedOptions].map((o) => Number(o.value));
  send({ type: "config", conf: Number($("conf").value), iou: Number($("iou").value),
    classes: classes.length ? classes : null });
}

// ----- connection ----------------------------------------------------------------------------
function waitForIceGathering(pc) {
  return new Promise((resolve) => {  // non-trickle: the offer carries every candidate
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
  });
}

/** The server's STUN/TURN list (RTC_ICE_SERVERS; a TURN credential made for this page);
 * none if it cannot be read. Static TURN passwords come only with the publish token. */
async function fetchIceServers() {
  try {
    const response = await fetch("/ice-servers", { headers: authHeaders(), cache: "no-store" });
    return response.ok ? (await response.json()).ice_servers : [];
  } catch (err) {
    return [];
  }
}

async function postOffer(pc) {
  let response;
  try {
    response = await fetch("/offer", {
      method: "POST", headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type, ...offerFields() }),
    });
  } catch (err) {
    throw errors.unreachable(err);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw errors.offerRefused(response.status, body, response.headers.get("Retry-After"));
  return body;
}

/** The connection ended without Stop: say why, free everything, leave Start one click away. */
function lost(c, why) {
  if (conn !== c) return;
  const wasConnected = state.state === "connected";
  teardown();
  setState("failed");
  showError(wasConnected ? errors.dropped(why) : errors.iceFailed());
  setStatus("Disconnected.");
}

function watchConnection(c) {
  c.pc.onconnectionstatechange = () => {
    if (conn !== c) return;
    const s = c.pc.connectionState;
    if (s === "connected") {
      clearTimeout(c.timeout);
      setState("connected");
      setStatus(`Connected (session ${state.sessionId ? state.sessionId.slice(0, 8) : "?"}).`);
    } else if (s === "disconnected") {
      // Often transient (a consent check missed); give it a moment before calling it dropped.
      setStatus("Connection interrupted…");
      c.grace = setTimeout(() => conn === c && c.pc.connectionState !== "connected" && lost(c, s), DISCONNECT_GRACE_MS);
    } else if (s === "failed" || s === "closed") {
      lost(c, s);
    }
  };
  c.timeout = setTimeout(() => conn === c && c.pc.connectionState !== "connected" && lost(c, "timeout"),
    CONNECT_TIMEOUT_MS);
}

async function start() {
  teardown();
  showError(null);
  state.messages = 0; state.drawn = []; state.drawnLabels = []; state.stats = {}; state.e2e = []; state.sessionId = null;
  setState("starting");
  const c = conn = { rate: new RollingRate(2000), clock: new FrameClock() };
  cameraChart.clear();
  c.sampler = setInterval(() => cameraChart.add("rate", performance.now(), c.rate.rateAt(performance.now())),
    CHART_SAMPLE_MS);
  try {
    if (!window.isSecureContext || !navigator.mediaDevices) throw errors.insecureContext();
    setStatus("Opening the camera…");
    c.stream = await openCamera();
    if (conn !== c) return;
    video.srcObject = c.stream;
    c.deviceId = c.stream.getVideoTracks()[0].getSettings().deviceId;
    await listCameras();

    const iceServers = await fetchIceServers();
    if (conn !== c) return;
    c.pc = new RTCPeerConnection({ iceServers, ...(needsInsertableStreamsFlag() ? { encodedInsertableStreams: true } : {}) });
    // Unordered, no retransmissions: a late detection is worth nothing, and a lost one must
    // not hold back the next (the server also skips messages while the channel is congested).
    c.channel = c.pc.createDataChannel("detections", { ordered: false, maxRetransmits: 0 });
    c.channel.onmessage = (event) => { if (conn === c) onMessage(event); };  // none after Stop
    c.channel.onopen = () => {
      send({ type: "config" });  // a bare config is a query: fills the sliders and class list
      c.pinger = setInterval(() => { send({ type: "ping", t: performance.now() }); report(c); }, PING_INTERVAL_MS);
      send({ type: "ping", t: performance.now() });
    };
    c.channel.onclose = () => lost(c, "the server closed the session");  // e.g. server restarted
    const track = c.stream.getVideoTracks()[0];
    c.sender = c.pc.addTrack(track, c.stream);
    c.worker = watchSentFrames(c.sender, c.clock);
    watchConnection(c);

    await c.pc.setLocalDescription(await c.pc.createOffer());
    await waitForIceGathering(c.pc);
    if (conn !== c) return;
    setStatus("Connecting to the server…");
    const answer = await postOffer(c.pc);
    if (conn !== c) return;
    state.sessionId = answer.session_id;
    // The publisher's own session token: opens this session (and no other) — used to end it.
    c.sessionId = answer.session_id;
    c.sessionToken = answer.token;
    state.hasSessionToken = Boolean(answer.token);
    await c.pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
  } catch (err) {
    if (conn !== c) return;
    teardown();
    setState("failed");
    showError(err);
    setStatus("Not connected.");
  }
}

/** Release everything the current attempt holds; closing the peer connection ends the server session. */
function teardown() {
  const c = conn;
  conn = null;
  if (!c) return;
  clearInterval(c.pinger); clearInterval(c.sampler); clearTimeout(c.timeout); clearTimeout(c.grace);
  if (c.channel) c.channel.onclose = null;
  if (c.channel) c.channel.close();
  if (c.pc) { c.pc.onconnectionstatechange = null; c.pc.close(); }
  if (c.worker) c.worker.terminate();
  if (c.stream) c.stream.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
  clearOverlay(canvas);
  canvas.dataset.labels = "";
}

/** End our own session on the server at once (closing the peer also ends it, later). */
function endOwnSession(c) {
  if (!c || !c.sessionId || !c.sessionToken) return;
  fetch(`/sessions/${c.sessionId}`, { method: "DELETE", headers: sessionHeaders(c.sessionToken), keepalive: true })
    .then((response) => { state.endStatus = response.status; })
    .catch(() => {});
}

function stop() {
  endOwnSession(conn);
  teardown();
  setState("stopped");
  setStatus("Stopped. Press Start to connect again.");
}

// ----- wiring --------------------------------------------------------------------------------
$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("camera").addEventListener("change", switchCamera);
$("resolution").addEventListener("change", switchCamera);
for (const id of ["conf", "iou"]) {
  $(id).addEventListener("input", () => { $(`${id}-value`).textContent = Number($(id).value).toFixed(2); });
  $(id).addEventListener("change", sendConfig);
}
$("classes").addEventListener("change", sendConfig);
$("all-classes").addEventListener("click", () => { for (const o of $("classes").options) o.selected = false; sendConfig(); });
onModelChange(send);
loadModels().then((models) => { state.models = models; });
window.addEventListener("pagehide", teardown);
initSessions(state);

if (!window.isSecureContext || !navigator.mediaDevices) {
  showError(errors.insecureContext());
  $("start").disabled = true;
  state.state = "insecure";
} else {
  listCameras().catch(() => {});
}
