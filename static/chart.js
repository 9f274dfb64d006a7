// A small live line chart on a <canvas>: the last minute of a few series, two y axes
// (milliseconds on the left, rates on the right). People read a trend from a line faster
// than from a changing number. No library: ~150 lines do what this page needs.

const DEFAULT_WINDOW_MS = 60000;
const MAX_POINTS = 4000;  // per series: a minute at 60 points/s, a hard bound whatever the caller does
const PAD = { left: 44, right: 40, top: 20, bottom: 16 };

/** A bound at or above `value` that reads well on an axis: 1, 2, 5 x 10^n. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

export class LiveChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{name: string, label: string, colour: string, axis: "left" | "right", unit: string}[]} series
   */
  constructor(canvas, series, { windowMs = DEFAULT_WINDOW_MS } = {}) {
    this.canvas = canvas;
    this.windowMs = windowMs;
    this.series = series.map((s) => ({ ...s, points: [] }));
    this.draws = 0;
    this.timer = null;
  }

  /** Add a point (`t`: ms, performance.now()); non-finite values are ignored. */
  add(name, t, value) {
    const s = this.series.find((x) => x.name === name);
    if (!s || typeof value !== "number" || !Number.isFinite(value)) return;
    s.points.push([t, value]);
    if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
  }

  clear() {
    for (const s of this.series) s.points = [];
    this.draw();
  }

  /** Redraw every `intervalMs` until stop(). */
  start(intervalMs = 500) {
    this.stop();
    this.timer = setInterval(() => this.draw(), intervalMs);
    return this;
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  /** What the chart holds, for tests and automation (window.rtcYolo.charts). */
  summary() {
    const out = { draws: this.draws, series: {} };
    for (const s of this.series) {
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      out.series[s.name] = { points: s.points.length, last };
    }
    return out;
  }

  draw(now = performance.now()) {
    const canvas = this.canvas;
    const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const start = now - this.windowMs;
    for (const s of this.series) {  // forget what scrolled out of the window
      let drop = 0;
      while (drop < s.points.length && s.points[drop][0] < start) drop += 1;
      if (drop) s.points.splice(0, drop);
    }
    const plot = { x: PAD.left, y: PAD.top, w: Math.max(1, w - PAD.left - PAD.right), h: Math.max(1, h - PAD.top - PAD.bottom) };
    const scale = {};
    for (const axis of ["left", "right"]) {
      const values = this.series.filter((s) => s.axis === axis).flatMap((s) => s.points.map((p) => p[1]));
      scale[axis] = niceMax(values.length ? Math.max(...values) : 0);
    }

    ctx.font = "11px ui-monospace, monospace";
    ctx.textBaseline = "middle";
    ctx.strokeStyle = "#333"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {  // grid, and both axes' labels
      const y = plot.y + (plot.h * i) / 4;
      ctx.beginPath(); ctx.moveTo(plot.x, y + 0.5); ctx.lineTo(plot.x + plot.w, y + 0.5); ctx.stroke();
      const f = 1 - i / 4;
      ctx.fillStyle = "#9a9a9a";
      ctx.textAlign = "right"; ctx.fillText(`${+(scale.left * f).toPrecision(3)}`, plot.x - 4, y);
      ctx.textAlign = "left"; ctx.fillText(`${+(scale.right * f).toPrecision(3)}`, plot.x + plot.w + 4, y);
    }
    ctx.textAlign = "left"; ctx.fillText(`-${Math.round(this.windowMs / 1000)} s`, plot.x, h - 7);
    ctx.textAlign = "right"; ctx.fillText("now", plot.x + plot.w, h - 7);

    let legendX = plot.x;
    for (const s of this.series) {
      const x = (t) => plot.x + ((t - start) / this.windowMs) * plot.w;
      const y = (v) => plot.y + plot.h - (Math.min(v, scale[s.axis]) / scale[s.axis]) * plot.h;
      ctx.strokeStyle = s.colour; ctx.lineWidth = 1.5;
      ctx.beginPath();
      s.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
      const last = s.points.length ? s.points[s.points.length - 1][1] : null;
      const text = `${s.label} ${last === null ? "–" : `${last.toFixed(last < 10 ? 1 : 0)} ${s.unit}`}`;
      ctx.fillStyle = s.colour; ctx.textAlign = "left";
      ctx.fillText(text, legendX, 9);
      legendX += ctx.measureText(text).width + 14;
    }
    this.draws += 1;
    canvas.dataset.points = this.series.map((s) => `${s.name}:${s.points.length}`).join(",");
  }
}

/** The series both views chart: latency in ms (left axis), detection rate (right axis). */
export const DETECTION_SERIES = [
  { name: "e2e", label: "end-to-end", colour: "#4fc3f7", axis: "left", unit: "ms" },
  { name: "server", label: "server", colour: "#ffb74d", axis: "left", unit: "ms" },
  { name: "rate", label: "detections", colour: "#81c784", axis: "right", unit: "/s" },
];
