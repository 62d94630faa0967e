// Small helpers shared by the views: building DOM nodes (text only: nothing the farm
// says is ever parsed as HTML), formatting times and durations, the progress bar.

export const FRAME_STATES = [
  "complete",
  "running",
  "failed",
  "killed",
  "blocked",
  "suspended",
  "pending",
];

// The frame grid's colours; the same as the CSS classes `.s-STATE` (style.css).
export const COLOURS = {
  complete: "#2e9d4f",
  running: "#2f74d0",
  failed: "#d03b3b",
  killed: "#6e5a8f",
  blocked: "#e08a1e",
  suspended: "#b9a200",
  pending: "#c9ced6",
};

// h("a", {href: "?view=job&id=3", class: "x"}, "text", child...): attributes are set as
// attributes (never `style`: the page's CSP allows no inline style), `on*` as listeners.
export function h(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  let s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hours = Math.floor(s / 3600);
  s -= hours * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d}d${String(hours).padStart(2, "0")}h`;
  if (hours) return `${hours}h${String(m).padStart(2, "0")}m`;
  return `${m}m${String(s).padStart(2, "0")}s`;
}

export function when(epoch) {
  if (epoch === null || epoch === undefined) return "-";
  const date = new Date(epoch * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

export function total(frames) {
  return FRAME_STATES.reduce((sum, state) => sum + (frames[state] || 0), 0);
}

// A bar split by frame state: one span per state that has frames, its width its share.
// `data-complete` holds the complete fraction (what a test or a screen reader can read).
export function progressBar(frames) {
  const all = total(frames);
  const parts = [];
  const words = [];
  for (const state of FRAME_STATES) {
    const count = frames[state] || 0;
    if (!count) continue;
    const part = h("span", { class: `s-${state}` });
    part.style.width = `${(100 * count) / all}%`;
    parts.push(part);
    words.push(`${count} ${state}`);
  }
  const label = all ? words.join(", ") : "no frames";
  const complete = all ? (frames.complete || 0) / all : 0;
  return h(
    "div",
    {
      class: "bar",
      role: "img",
      "aria-label": label,
      title: label,
      "data-complete": complete.toFixed(4),
    },
    parts,
  );
}

export function stateBadge(state) {
  return h("span", { class: `badge s-${state}` }, state);
}

export function jobLink(id, text) {
  return h("a", { href: `?view=job&id=${id}`, "data-nav": "" }, text === undefined ? `${id}` : text);
}
