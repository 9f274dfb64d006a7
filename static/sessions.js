// The sessions view: every live session and stream on the server (GET /sessions, polled),
// and any one of them followed live — its detections over Server-Sent Events drawn over a
// snapshot of its newest frame (refreshed a couple of times a second), with a chart of its
// latency and detection rate. A WHIP or RTSP stream has no page of its own; this is where
// it can be watched from a browser.
//
// Listing every session is the *operator's* right (docs/security.md): the view sends the
// operator token (/#operator=..., or typed in here), and when /sessions answers 401/403 it
// shows no sessions, only a request for an operator token. A publisher needs none of this.
//
// Everything shown is also kept in `window.rtcYolo.sessions` (and the chart in
// `window.rtcYolo.charts.watch`) for tests and automation.
import { operatorHeaders, setOperatorToken } from "./auth.js";
import { DETECTION_SERIES, LiveChart } from "./chart.js";
import { clearOverlay, drawDetections, drawShapesOnly } from "./overlay.js";
import { ShapeEditor } from "./shapes.js";
import { RollingRate, ms } from "./stats.js";

const POLL_MS = 2000;
const SNAPSHOT_MS = 500;  // a modest refresh: the server encodes only on request (RTC_SNAPSHOT_RATE caps it)
const CHART_SAMPLE_MS = 500;

const $ = (id) => document.getElementById(id);
const short = (id) => id.slice(0, 8);
const fixed = (value, digits = 1) => (typeof value === "number" ? value.toFixed(digits) : "–");

export function initSessions(root) {
  const view = root.sessions = {
    view: "camera", list: [], listError: null, denied: null, polls: 0,
    watching: null, state: "idle", reason: null, messages: 0, drawn: [], drawnLabels: [],
    model: null, frame: null, snapshots: 0, snapshotSize: null, stats: {}, events: [],
  };
  const chart = new LiveChart($("watch-chart"), DETECTION_SERIES);
  Object.defineProperty(root.charts, "watch", { get: () => chart.summary(), enumerable: true });
  const image = $("watch-image"), overlay = $("watch-overlay");
  let poller = null;
  /** The current watch's resources; replaced wholesale, so stale callbacks can tell. */
  let watch = null;

  /** Lines and zones of the watched session, drawn by clicking; set with PATCH /sessions/{id}. */
  const shapes = new ShapeEditor(overlay, {
    line: $("watch-draw-line"), zone: $("watch-draw-zone"), finish: $("watch-finish-zone"),
    clear: $("watch-clear-shapes"), counts: $("watch-counts"),
  }, async (fields) => {
    if (!watch) return "watch a session first";
    // The operator's token, and the watched session's own token: either right may PATCH it.
    const response = await fetch(withToken(`/sessions/${watch.id}`, watch), {
      method: "PATCH", headers: { ...operatorHeaders(), "Content-Type": "application/json" }, body: JSON.stringify(fields),
    }).catch(() => null);
    if (!response) return "the server is unreachable";
    if (response.ok) return null;  // the config ack arrives over SSE too
    const body = await response.json().catch(() => ({}));
    return `${body.error || response.status}: ${body.detail || ""}`;
  }, () => drawShapesOnly(overlay, image, shapes.shapes));
  view.shapes = shapes;

  // ----- which view ------------------------------------------------------------------------
  function showView(name) {
    view.view = name;
    $("camera-view").hidden = name !== "camera";
    $("sessions-view").hidden = name !== "sessions";
    $("show-camera").setAttribute("aria-pressed", String(name === "camera"));
    $("show-sessions").setAttribute("aria-pressed", String(name === "sessions"));
    clearInterval(poller);
    if (name === "sessions") {
      poll();
      poller = setInterval(poll, POLL_MS);
    } else {
      stopWatching();
    }
  }

  // ----- the list --------------------------------------------------------------------------
  async function poll() {
    try {
      const response = await fetch("/sessions", { headers: operatorHeaders(), cache: "no-store" });
      const body = await response.json().catch(() => ({}));
      if (response.status === 401 || response.status === 403) {
        deny(response.status, body);
      } else if (!response.ok) {
        throw new Error(`HTTP ${response.status}: ${body.error || ""} ${body.detail || ""}`.trim());
      } else {
        view.list = body.sessions;
        view.listError = null;
        view.denied = null;
      }
    } catch (err) {
      view.listError = err.message || String(err);
    }
    view.polls += 1;
    render();
    const w = watch;
    if (!w) return;
    const entry = view.list.find((s) => s.id === w.id);
    if (entry) {
      w.token = entry.token;  // fresh: a reconnecting EventSource or the next snapshot may need it
      chart.add("e2e", performance.now(), entry.latency.e2e_ms_p50);  // only the sender can measure it
      stat("e2eMs", entry.latency.e2e_ms_p50, entry.latency.e2e_ms_p50 === null ? "not reported" : ms(entry.latency.e2e_ms_p50));
      stat("source", entry.source, entry.source);
      if (view.state === "lost") startWatching(entry);  // e.g. the token had expired: follow again
    }
  }

  /** Not an operator: show nothing of anyone's sessions; ask for the operator token. */
  function deny(status, body) {
    clearInterval(poller);  // until a token is given
    stopWatching();
    view.list = [];
    view.denied = { status, error: body.error || null };
    view.listError = `HTTP ${status}: ${body.error || ""} ${body.detail || ""}`.trim();
  }

  function render() {
    const denied = view.denied !== null;
    $("sessions").hidden = denied;
    $("operator-login").hidden = !denied;
    if (denied) {
      $("sessions-rows").replaceChildren();
      $("sessions-state").textContent = view.denied.status === 403
        ? "The sessions view is for operators: this token may publish a camera, not watch others. Enter the operator token."
        : "The sessions view is for operators: enter the operator token (RTC_OPERATOR_TOKEN).";
      return;
    }
    const rows = view.list.map((s) => {
      const row = document.createElement("tr");
      row.dataset.id = s.id;
      if (watch && watch.id === s.id) row.className = "watched";
      const cells = [short(s.id), s.source, s.model, fixed(s.rates.received_fps), fixed(s.rates.processed_fps),
        fixed(s.latency.server_ms_p50), fixed(s.latency.e2e_ms_p50), String(s.subscribers.length), `${Math.round(s.age_s)} s`];
      for (const text of cells) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      if (s.source_info && s.source_info.url) row.children[1].title = s.source_info.url;  // a pulled stream's URL
      const actions = document.createElement("td");
      actions.append(button("Watch", `Watch session ${short(s.id)}`, () => startWatching(s)),
        button("End", `End session ${short(s.id)}`, () => endSession(s.id)));
      row.append(actions);
      return row;
    });
    $("sessions-rows").replaceChildren(...rows);
    const count = view.list.length;
    $("sessions-state").textContent = view.listError ? `Cannot list sessions: ${view.listError}`
      : count ? `${count} live session${count === 1 ? "" : "s"}; updated every ${POLL_MS / 1000} s.`
        : "No live sessions. Start the camera in another tab, or stream to the server (WHIP, RTSP).";
  }

  function button(text, label, onClick) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.setAttribute("aria-label", label);
    b.addEventListener("click", onClick);
    return b;
  }

  async function endSession(id) {
    const response = await fetch(`/sessions/${id}`, { method: "DELETE", headers: operatorHeaders() }).catch(() => null);
    if (response && !response.ok && response.status !== 404) {
      view.listError = `could not end session ${short(id)} (HTTP ${response.status})`;
    }
    poll();
  }

  // ----- following one session -------------------------------------------------------------
  function stat(name, value, text) {
    view.stats[name] = value;
    const element = document.querySelector(`#watch-stats [data-stat="${name}"]`);
    if (element) element.textContent = text;
  }

  function withToken(path, w) {
    // EventSource cannot send headers: the session's own short-lived token goes in the query
    // (needed with RTC_AUTH_TOKEN, harmless without). The bearer token never goes into a URL.
    return w.token ? `${path}?token=${encodeURIComponent(w.token)}` : path;
  }

  function startWatching(entry) {
    stopWatching();
    const w = watch = { id: entry.id, token: entry.token, rate: new RollingRate(2000), objectUrl: null };
    Object.assign(view, { watching: entry.id, state: "connecting", reason: null, messages: 0, drawn: [],
      drawnLabels: [], model: entry.model, frame: null, snapshots: 0, snapshotSize: null, stats: {}, events: [] });
    shapes.setShapes(entry.settings?.zones, entry.settings?.lines);
    shapes.setCounts(null);
    $("watch").hidden = false;
    $("watch-title").textContent = `Session ${short(entry.id)} (${entry.source})`;
    $("watch-status").textContent = "Connecting…";
    for (const dd of document.querySelectorAll("#watch-stats dd")) dd.textContent = "–";
    stat("source", entry.source, entry.source);
    chart.clear();
    chart.start();
    w.sampler = setInterval(() => chart.add("rate", performance.now(), w.rate.rateAt(performance.now())), CHART_SAMPLE_MS);
    w.events = new EventSource(withToken(`/sessions/${entry.id}/events`, w));
    w.events.onopen = () => {
      if (watch !== w) return;
      view.state = "watching";
      $("watch-status").textContent = "Following its detections live.";
    };
    w.events.onmessage = (event) => watch === w && onMessage(w, JSON.parse(event.data));
    w.events.onerror = () => {
      if (watch !== w || w.events.readyState !== EventSource.CLOSED) return;  // CONNECTING: it retries itself
      lose(w, "the server refused or ended the subscription");
    };
    render();
    refreshSnapshot(w);
  }

  function onMessage(w, msg) {
    if (msg.type === "config") {
      view.model = msg.model;
      stat("model", msg.model, msg.model);
      shapes.setShapes(msg.zones, msg.lines);
    } else if (msg.type === "event") {
      view.events.push(msg);
      if (view.events.length > 100) view.events.shift();
    } else if (msg.type === "detections") {
      const drawn = drawDetections(overlay, image, msg, shapes.shapes);
      shapes.setCounts(msg.counts);
      const now = performance.now();
      view.messages += 1;
      view.drawn = drawn;
      view.drawnLabels = [...new Set(drawn.map((d) => d.label))].sort();
      view.frame = { frameId: msg.frame_id, width: msg.width, height: msg.height };
      overlay.dataset.labels = view.drawnLabels.join(",");
      w.rate.tick(now);
      chart.add("server", now, msg.timing.server_ms);
      stat("fps", w.rate.rate, `${w.rate.rate.toFixed(1)} /s`);
      stat("serverMs", msg.timing.server_ms, ms(msg.timing.server_ms));
      stat("frameSize", { width: msg.width, height: msg.height }, `${msg.width}×${msg.height}`);
      if (msg.frames) stat("dropped", msg.frames.dropped, `${msg.frames.dropped} of ${msg.frames.received}`);
      stat("model", msg.model.name, msg.model.name);
    } else if (msg.type === "closed") {
      end(w, `Session ended: ${msg.reason}.`);
    }
  }

  async function refreshSnapshot(w) {
    if (watch !== w) return;
    let wait = SNAPSHOT_MS;
    try {
      const response = await fetch(withToken(`/sessions/${w.id}/snapshot.jpg`, w), { cache: "no-store" });
      if (response.ok) {
        const url = URL.createObjectURL(await response.blob());
        if (watch !== w) { URL.revokeObjectURL(url); return; }
        image.src = url;
        await image.decode().catch(() => {});
        if (w.objectUrl) URL.revokeObjectURL(w.objectUrl);
        w.objectUrl = url;
        view.snapshots += 1;
        view.snapshotSize = { width: image.naturalWidth, height: image.naturalHeight };
      } else if (response.status === 429 || response.status === 503) {
        wait = Math.max(wait, 1000 * Number(response.headers.get("Retry-After") || 1));
      }
    } catch (err) {
      wait = 2000;  // the server is unreachable for now; the SSE stream says more
    }
    if (watch === w) w.snapTimer = setTimeout(() => refreshSnapshot(w), wait);
  }

  /** The subscription is over for good (the session ended): keep the last picture. */
  function end(w, text) {
    release(w);
    view.state = "ended";
    view.reason = text;
    $("watch-status").textContent = text;
    poll();
  }

  /** The subscription failed (e.g. an expired token); the next poll follows again if it still lives. */
  function lose(w, why) {
    release(w);
    view.state = "lost";
    view.reason = why;
    $("watch-status").textContent = `Not following: ${why}.`;
  }

  function release(w) {
    if (w.events) { w.events.onmessage = w.events.onerror = null; w.events.close(); }
    clearInterval(w.sampler);
    clearTimeout(w.snapTimer);
    chart.stop();
    chart.draw();
  }

  function stopWatching() {
    const w = watch;
    watch = null;
    if (!w) return;
    release(w);
    if (w.objectUrl) URL.revokeObjectURL(w.objectUrl);
    image.removeAttribute("src");
    clearOverlay(overlay);
    overlay.dataset.labels = "";
    $("watch").hidden = true;
    Object.assign(view, { watching: null, state: "idle" });
    render();
  }

  // ----- wiring ----------------------------------------------------------------------------
  $("show-camera").addEventListener("click", () => showView("camera"));
  $("show-sessions").addEventListener("click", () => showView("sessions"));
  $("stop-watching").addEventListener("click", stopWatching);
  $("operator-login").addEventListener("submit", (event) => {
    event.preventDefault();
    setOperatorToken($("operator-token").value.trim());
    $("operator-token").value = "";
    view.denied = null;
    if (view.view === "sessions") showView("sessions");  // poll again, with the token
  });
  window.addEventListener("pagehide", stopWatching);
  // A dashboard can link straight to a session: /#view=sessions&watch=<id> (with &token=... if needed).
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("view") === "sessions" || hash.get("watch")) {
    showView("sessions");
    const wanted = hash.get("watch");
    if (wanted) {
      const follow = setInterval(() => {
        const entry = view.list.find((s) => s.id === wanted || s.id.startsWith(wanted));
        if (entry) { clearInterval(follow); startWatching(entry); }
      }, 250);
      setTimeout(() => clearInterval(follow), 15000);
    }
  }
}
