// The frame grid: every frame (or chunk) of a job as one cell of one <canvas>, coloured by
// state. A job may have 10,000 frames and more, so there is one node whatever the count:
// drawing is a fillRect per cell, grouped by colour (one fillStyle per state), a few
// milliseconds at 10,000. The cell size shrinks as frames grow so that the grid fits
// MAX_HEIGHT; past the smallest cell the canvas grows taller instead.
//
// Hovering a cell shows its frame's facts in a tooltip; clicking it (or Enter on the
// focused grid, arrows to move) selects it: `onSelect(entry)`.

import { COLOURS, FRAME_STATES, duration, h, when } from "./util.js";

const MAX_HEIGHT = 320; // CSS pixels the grid aims to fit in
const MIN_CELL = 4;
const MAX_CELL = 22;

export function describe(entry) {
  const took =
    entry.started_at !== null && entry.finished_at !== null
      ? duration(entry.finished_at - entry.started_at)
      : entry.started_at !== null && entry.state === "running"
        ? `${duration(Date.now() / 1000 - entry.started_at)} so far`
        : "-";
  return [
    `frame ${entry.frames} · ${entry.state}`,
    `worker ${entry.worker || "-"} · attempts ${entry.attempts} · failures ${entry.failures}`,
    `started ${when(entry.started_at)}`,
    `finished ${when(entry.finished_at)} · took ${took}`,
  ];
}

export class FrameGrid {
  constructor(onSelect) {
    this.onSelect = onSelect;
    this.entries = [];
    this.selected = -1;
    this.hover = -1;
    this.layout = { cell: MAX_CELL, columns: 1, rows: 0 };
    this.drawMs = 0;
    this.canvas = h("canvas", {
      class: "grid",
      tabindex: 0,
      role: "img",
      "aria-label": "frame grid",
    });
    this.tip = h("div", { class: "tip", role: "tooltip", hidden: true });
    this.node = h("div", { class: "grid-box" }, this.canvas, this.tip);
    this.canvas.addEventListener("mousemove", (event) => this.moved(event));
    this.canvas.addEventListener("mouseleave", () => {
      this.hover = -1;
      this.tip.hidden = true;
    });
    this.canvas.addEventListener("click", (event) => {
      const index = this.at(event);
      if (index >= 0) this.select(index);
    });
    this.canvas.addEventListener("keydown", (event) => this.key(event));
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(this.node);
  }

  set(entries) {
    this.entries = entries;
    this.draw();
  }

  plan(width) {
    const count = Math.max(1, this.entries.length);
    let cell = Math.floor(Math.sqrt((width * MAX_HEIGHT) / count));
    cell = Math.max(MIN_CELL, Math.min(MAX_CELL, cell));
    const columns = Math.max(1, Math.floor(width / cell));
    return { cell, columns, rows: Math.ceil(this.entries.length / columns) };
  }

  draw() {
    const started = performance.now();
    const width = Math.max(100, this.node.clientWidth || 800);
    const layout = this.plan(width);
    this.layout = layout;
    const ratio = window.devicePixelRatio || 1;
    const height = Math.max(layout.cell, layout.rows * layout.cell);
    const canvas = this.canvas;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
      canvas.style.width = `${width}px`;
      canvas.style.height = `${height}px`;
    }
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const { cell, columns } = layout;
    const gap = cell >= 8 ? 1 : 0;
    const byState = new Map(FRAME_STATES.map((state) => [state, []]));
    this.entries.forEach((entry, index) => {
      const list = byState.get(entry.state);
      if (list) list.push(index);
    });
    for (const [state, indexes] of byState) {
      g.fillStyle = COLOURS[state];
      for (const index of indexes) {
        const x = (index % columns) * cell;
        const y = Math.floor(index / columns) * cell;
        g.fillRect(x, y, cell - gap, cell - gap);
      }
    }
    if (this.selected >= 0 && this.selected < this.entries.length) {
      const x = (this.selected % columns) * cell;
      const y = Math.floor(this.selected / columns) * cell;
      g.lineWidth = 2;
      g.strokeStyle = "#111";
      g.strokeRect(x + 1, y + 1, Math.max(2, cell - gap - 2), Math.max(2, cell - gap - 2));
    }
    this.drawMs = performance.now() - started;
    canvas.dataset.drawMs = this.drawMs.toFixed(1);
    canvas.dataset.cells = String(this.entries.length);
    const counts = FRAME_STATES.map((state) => `${byState.get(state).length} ${state}`);
    canvas.setAttribute("aria-label", `frame grid of ${this.entries.length}: ${counts.join(", ")}`);
  }

  at(event) {
    const box = this.canvas.getBoundingClientRect();
    const { cell, columns } = this.layout;
    const column = Math.floor((event.clientX - box.left) / cell);
    const row = Math.floor((event.clientY - box.top) / cell);
    if (column < 0 || column >= columns || row < 0) return -1;
    const index = row * columns + column;
    return index < this.entries.length ? index : -1;
  }

  moved(event) {
    const index = this.at(event);
    if (index < 0) {
      this.tip.hidden = true;
      return;
    }
    if (index !== this.hover) {
      this.hover = index;
      this.tip.replaceChildren(...describe(this.entries[index]).map((line) => h("div", {}, line)));
    }
    const box = this.node.getBoundingClientRect();
    const x = event.clientX - box.left + 14;
    this.tip.style.left = `${Math.min(x, box.width - 260)}px`;
    this.tip.style.top = `${event.clientY - box.top + 14}px`;
    this.tip.hidden = false;
  }

  key(event) {
    const { columns } = this.layout;
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns };
    if (event.key in moves) {
      event.preventDefault();
      const next = Math.max(0, this.selected) + moves[event.key];
      if (next >= 0 && next < this.entries.length) this.select(next);
    }
  }

  select(index) {
    this.selected = index;
    this.draw();
    this.onSelect(this.entries[index]);
  }

  // select the entry that covers `frame` (a chunk by any frame it holds)
  selectFrame(frame) {
    let found = this.entries.findIndex((entry) => entry.frame === frame);
    if (found < 0) {
      found = this.entries.findIndex((entry, i) => {
        const next = this.entries[i + 1];
        return entry.frame <= frame && (!next || next.frame > frame);
      });
    }
    if (found >= 0) this.select(found);
    return found >= 0;
  }

  close() {
    this.resize.disconnect();
  }
}
