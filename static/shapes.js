// Lines and zones drawn on the video by clicking (issue 21), for the camera view and the
// sessions view alike. Points are fractions (0-1) of the displayed frame, which is what the
// server takes. A line is two clicks (a, then b); a zone is three or more clicks, closed by
// "Finish zone" or by clicking its first point again. `apply({zones, lines})` sends the
// stream's whole new set (the camera view: a config message on the data channel; the
// sessions view: PATCH /sessions/{id}); the server's config ack is what is then drawn.

const CLOSE_ENOUGH = 0.02;  // a click this near the first point closes a zone

export class ShapeEditor {
  /**
   * @param {HTMLCanvasElement} canvas the overlay (clicks land on it while drawing)
   * @param {{line: HTMLButtonElement, zone: HTMLButtonElement, finish: HTMLButtonElement,
   *          clear: HTMLButtonElement, counts: HTMLElement}} ui
   * @param {(shapes: {zones?: object[], lines?: object[]}) => Promise<string|null>} apply
   *        resolves to an error text, or null once sent
   * @param {() => void} redraw
   */
  constructor(canvas, ui, apply, redraw) {
    this.canvas = canvas; this.ui = ui; this.apply = apply; this.redraw = redraw;
    this.zones = []; this.lines = [];
    this.pending = null;  // {kind: "line" | "zone", points: [[x, y], ...]}
    this.error = null;
    this.counts = null;
    ui.line.addEventListener("click", () => this.begin("line"));
    ui.zone.addEventListener("click", () => this.begin("zone"));
    ui.finish.addEventListener("click", () => this.finishZone());
    ui.clear.addEventListener("click", () => this.send({ zones: [], lines: [] }));
    // On the stage around the canvas, so a click on a figures panel over the video counts too.
    (canvas.parentElement || canvas).addEventListener("click", (event) => this.onClick(event));
    this.render();
  }

  /** What the overlay draws. */
  get shapes() { return { zones: this.zones, lines: this.lines, pending: this.pending }; }

  /** The stream's shapes as the server states them (config ack, GET /sessions). */
  setShapes(zones, lines) {
    this.zones = zones || []; this.lines = lines || [];
    this.render();
  }

  begin(kind) {
    this.pending = { kind, points: [] };
    this.error = null;
    this.render(); this.redraw();
  }

  onClick(event) {
    if (!this.pending) return;
    const rect = this.canvas.getBoundingClientRect();
    if (event.clientX < rect.left || event.clientX > rect.right || event.clientY < rect.top
        || event.clientY > rect.bottom) return;
    const x = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
    const y = Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height));
    const point = [Math.round(x * 1000) / 1000, Math.round(y * 1000) / 1000];
    const p = this.pending;
    if (p.kind === "zone" && p.points.length >= 3
        && Math.hypot(point[0] - p.points[0][0], point[1] - p.points[0][1]) < CLOSE_ENOUGH) {
      this.finishZone();
      return;
    }
    p.points.push(point);
    if (p.kind === "line" && p.points.length === 2) {
      const name = this.freeName("line", this.lines);
      this.pending = null;
      this.send({ lines: [...this.lines, { name, a: p.points[0], b: p.points[1] }] });
    }
    this.render(); this.redraw();
  }

  finishZone() {
    const p = this.pending;
    if (!p || p.kind !== "zone" || p.points.length < 3) return;
    this.pending = null;
    const name = this.freeName("zone", this.zones);
    this.send({ zones: [...this.zones, { name, polygon: p.points }] });
    this.render(); this.redraw();
  }

  freeName(kind, existing) {
    const taken = new Set(existing.map((s) => s.name));
    for (let i = 1; ; i++) if (!taken.has(`${kind} ${i}`)) return `${kind} ${i}`;
  }

  async send(shapes) {
    this.error = await this.apply(shapes);
    this.render();
  }

  /** Running counts from a detection message (null: the stream has no shapes). */
  setCounts(counts) {
    this.counts = counts || null;
    this.renderCounts();
  }

  render() {
    const { line, zone, finish, clear } = this.ui;
    const drawing = this.pending !== null;
    this.canvas.classList.toggle("drawing", drawing);
    line.setAttribute("aria-pressed", String(this.pending?.kind === "line"));
    zone.setAttribute("aria-pressed", String(this.pending?.kind === "zone"));
    finish.disabled = !(this.pending?.kind === "zone" && this.pending.points.length >= 3);
    clear.disabled = !this.zones.length && !this.lines.length;
    this.canvas.dataset.shapes = [...this.lines.map((l) => l.name), ...this.zones.map((z) => z.name)].join(",");
    this.renderCounts();
  }

  renderCounts() {
    const out = this.ui.counts;
    const rows = [];
    const counts = this.counts || { lines: {}, zones: {} };
    for (const l of this.lines) {
      const c = counts.lines?.[l.name] || { left: 0, right: 0 };
      rows.push([l.name, `left ${c.left} · right ${c.right}`]);
    }
    for (const z of this.zones) {
      const c = counts.zones?.[z.name] || { inside: 0, entered: 0 };
      rows.push([z.name, `inside ${c.inside} · entered ${c.entered}`]);
    }
    if (this.pending) {
      rows.push(["drawing", this.pending.kind === "line" ? `click ${2 - this.pending.points.length} more point(s)`
        : "click 3+ points, then Finish zone"]);
    }
    if (this.error) rows.push(["error", this.error]);
    out.replaceChildren(...rows.flatMap(([name, text]) => {
      const dt = document.createElement("dt"); dt.textContent = name;
      const dd = document.createElement("dd"); dd.textContent = text; dd.dataset.shape = name;
      return [dt, dd];
    }));
  }
}
