// rtc-yolo page: camera -> WebRTC (REST signaling) -> server detections -> canvas overlay.
"use strict";

const $ = (id) => document.getElementById(id);
const video = $("video"), canvas = $("overlay"), ctx = canvas.getContext("2d");
let pc = null, channel = null, stream = null, fpsTimes = [];

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function colour(classId) {
  return `hsl(${(classId * 47) % 360} 90% 55%)`;
}

function draw(msg) {
  const w = video.clientWidth, h = video.clientHeight;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  ctx.clearRect(0, 0, w, h);
  // Boxes are in the pixels of the frame the server received; scale to what is displayed.
  const sx = w / msg.width, sy = h / msg.height;
  ctx.lineWidth = 2; ctx.font = "14px system-ui, sans-serif"; ctx.textBaseline = "top";
  for (const d of msg.detections) {
    const [x1, y1, x2, y2] = d.box;
    const c = colour(d.class_id), label = `${d.label} ${(d.score * 100).toFixed(0)}%`;
    ctx.strokeStyle = c; ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    const tw = ctx.measureText(label).width + 6;
    ctx.fillStyle = c; ctx.fillRect(x1 * sx, Math.max(0, y1 * sy - 18), tw, 18);
    ctx.fillStyle = "#000"; ctx.fillText(label, x1 * sx + 3, Math.max(0, y1 * sy - 18) + 2);
  }
}

function onMessage(event) {
  const msg = JSON.parse(event.data);
  if (msg.type === "pong") { $("rtt-ms").textContent = `${(performance.now() - msg.t).toFixed(1)} ms`; return; }
  if (msg.type === "error") { setStatus(`Server: ${msg.error}: ${msg.detail}`, true); return; }
  if (msg.type !== "detections") return;
  draw(msg);
  const now = performance.now();
  fpsTimes.push(now);
  while (fpsTimes.length && now - fpsTimes[0] > 2000) fpsTimes.shift();
  $("fps").textContent = (fpsTimes.length / 2).toFixed(1);
  $("server-ms").textContent = `${msg.timing.server_ms.toFixed(1)} ms`;
  if (msg.frames) $("dropped").textContent = String(msg.frames.dropped);
  $("model").textContent = msg.model.name;
}

async function start() {
  $("start").disabled = true;
  try {
    setStatus("Opening the camera…");
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    video.srcObject = stream;
    pc = new RTCPeerConnection({ iceServers: [] });
    channel = pc.createDataChannel("detections");
    channel.onmessage = onMessage;
    let pinger = null;
    channel.onopen = () => { pinger = setInterval(() => channel.readyState === "open" &&
      channel.send(JSON.stringify({ type: "ping", t: performance.now() })), 1000); };
    channel.onclose = () => clearInterval(pinger);
    for (const track of stream.getVideoTracks()) { track.contentHint = "detail"; pc.addTrack(track, stream); }
    pc.onconnectionstatechange = () => {
      setStatus(`Connection: ${pc.connectionState}`, pc.connectionState === "failed");
      if (pc.connectionState === "failed") stop();
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {  // non-trickle: wait for ICE gathering to finish
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
    });
    setStatus("Connecting to the server…");
    // With RTC_AUTH_TOKEN set, open the page as /#token=<token>: the fragment never leaves the browser.
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch("/offer", {
      method: "POST", headers,
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(`${answer.error}: ${answer.detail}`);
    await pc.setRemoteDescription(answer);
    $("stop").disabled = false;
  } catch (err) {
    setStatus(`Could not start: ${err.message || err}`, true);
    stop();
  }
}

function stop() {
  if (channel) channel.close();
  if (pc) pc.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  pc = channel = stream = null; fpsTimes = [];
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  $("start").disabled = false; $("stop").disabled = true;
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => { stop(); setStatus("Stopped."); });
