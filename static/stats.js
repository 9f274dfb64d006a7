// Small numeric helpers for the overlay panel.

/** Events per second over a rolling time window (ms timestamps). */
export class RollingRate {
  constructor(windowMs = 2000) {
    this.windowMs = windowMs;
    this.times = [];
  }

  tick(t) {
    this.times.push(t);
    while (this.times.length && t - this.times[0] > this.windowMs) this.times.shift();
  }

  get rate() {
    const n = this.times.length;
    if (n < 2) return 0;
    const span = this.times[n - 1] - this.times[0];
    return span > 0 ? ((n - 1) * 1000) / span : 0;
  }

  /** Events per second over the window ending at `now`: falls to 0 when events stop. */
  rateAt(now) {
    const recent = this.times.filter((t) => now - t <= this.windowMs).length;
    return (recent * 1000) / this.windowMs;
  }

  reset() { this.times = []; }
}

export function ms(value) {
  return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(1)} ms` : "–";
}
