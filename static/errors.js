// Turns what went wrong into something a user can act on.

export class UserError extends Error {
  constructor(kind, message) { super(message); this.kind = kind; }
}

export function insecureContext() {
  return new UserError("insecure",
    `Browsers give the camera only to secure pages. This page was loaded from ${location.origin}: ` +
    "open it over HTTPS, or as http://localhost / http://127.0.0.1 on the machine running the server.");
}

export function cameraError(err, resolution) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new UserError("camera-denied",
        "Camera access was denied. Allow the camera for this site (the camera icon in the address bar " +
        "or the site settings), then press Start.");
    case "NotFoundError":
      return new UserError("camera-missing", "No camera was found. Connect one (or pick another in Camera), then press Start.");
    case "OverconstrainedError":
      if (err.constraint === "deviceId") {
        return new UserError("camera-missing", "The chosen camera is no longer available. Pick another in Camera, then press Start.");
      }
      return new UserError("camera-missing",
        `The chosen camera cannot deliver ${resolution}. Pick another resolution or camera, then press Start.`);
    case "NotReadableError":
    case "AbortError":
      return new UserError("camera-busy", "The camera is in use by another application or failed to start. Close it there, then press Start.");
    default:
      return new UserError("camera", `Could not open the camera: ${err && err.message ? err.message : err}`);
  }
}

export function unreachable(err) {
  return new UserError("unreachable",
    `The server at ${location.origin} is unreachable (${err.message || err}). Check that rtc-server is running, then press Start.`);
}

/** An error answer from POST /offer: {"error", "detail"} JSON, 503 with Retry-After when full. */
export function offerRefused(status, body, retryAfter) {
  const wait = retryAfter ? ` Retry in ${retryAfter} s.` : "";
  if (status === 503 && body.error === "not_ready") {
    return new UserError("not-ready", `The server is still loading its model.${wait || " Retry shortly."}`);
  }
  if (status === 503) {
    const detail = body.detail ? ` (${body.detail})` : "";
    return new UserError("server-full", `The server is full: it serves as many sessions as it can${detail}.${wait} Then press Start.`);
  }
  return new UserError("refused", `The server refused the connection (HTTP ${status}): ${body.error || ""}: ${body.detail || ""}`);
}

export function iceFailed() {
  return new UserError("ice-failed",
    "The media connection could not be established (ICE failed): no network path between this browser " +
    "and the server's UDP ports. Behind a NAT or firewall the server needs a TURN server " +
    "(RTC_ICE_SERVERS, see docs/configuration.md). Press Start to try again.");
}

export function dropped(state) {
  return new UserError("dropped", `The connection dropped (${state}). Press Start to reconnect.`);
}
