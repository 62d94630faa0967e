// The workers view and the clusters view: each one list from the API, fetched again
// when a notice says it changed (`workers`; `clusters`), at most once every GAP (the
// shares move with every frame that starts or ends, and a table need not redraw faster).

import * as api from "./api.js";
import { clear, h } from "./util.js";

const GAP = 500; // ms between two fetches of a list

// Fetch-and-draw that runs once at a time, at most every GAP, merging what comes meanwhile.
class Refresher {
  constructor(run, failed) {
    this.run = run;
    this.failed = failed;
    this.busy = false;
    this.again = false;
    this.last = 0;
    this.closed = false;
  }

  async kick() {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    try {
      do {
        this.again = false;
        const wait = this.last + GAP - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (this.closed) return;
        this.last = performance.now();
        await this.run();
      } while (this.again && !this.closed);
    } catch (error) {
      this.failed(error);
    } finally {
      this.busy = false;
    }
  }
}

function meter(used, all, label) {
  const node = h("meter", { min: 0, max: Math.max(all, 1e-9), value: used, title: label });
  node.setAttribute("aria-label", label);
  return node;
}

function num(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function runningLinks(running) {
  if (!running.length) return "-";
  return running.slice(0, 20).flatMap((text, i) => {
    const [job, frame] = text.split(":");
    const link = h("a", { href: `?view=job&id=${job}&frame=${frame}`, "data-nav": "" }, text);
    return [i ? " " : "", link];
  });
}

export class WorkersView {
  constructor(root, params, context) {
    this.root = root;
    this.context = context;
    this.body = h("tbody");
    this.note = h("p", { class: "counts", "aria-live": "polite" });
    const column = (text, cls) => h("th", { scope: "col", class: cls }, text);
    clear(
      root,
      h("h1", {}, "Workers"),
      this.note,
      h(
        "table",
        { class: "workers", "aria-label": "workers" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            column("Name"),
            column("Cluster"),
            column("State"),
            column("Slots", "num"),
            column("Host load", "num"),
            column("Running"),
            column("Types"),
            column("Releases"),
            context.can("lock workers") ? column("Actions") : null,
          ),
        ),
        this.body,
      ),
    );
    this.refresher = new Refresher(() => this.load(), context.failed);
  }

  async load() {
    const workers = await api.get("/workers");
    if (this.refresher.closed) return;
    const used = workers.reduce((sum, w) => sum + w.used, 0);
    const slots = workers.reduce((sum, w) => sum + w.slots, 0);
    this.note.textContent = `${workers.length} workers connected; ${num(used)} of ${slots} slots used`;
    const rows = workers.map((w) => this.row(w));
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No worker is connected.")));
    clear(this.body, rows);
  }

  row(w) {
    const releases = Object.entries(w.releases || {}).map(([name, version]) => `${name} ${version}`);
    const failures = Object.entries(w.release_failures || {}).map(([name, why]) => `${name}: ${why}`);
    const state = w.locked ? `locked (${w.locked})` : w.state;
    let actions = null;
    if (this.context.can("lock workers")) {
      const act = (label, call) =>
        h(
          "button",
          {
            type: "button",
            "data-action": label.toLowerCase(),
            onclick: async () => {
              if (await this.context.act(call)) this.refresher.kick();
            },
          },
          label,
        );
      const name = encodeURIComponent(w.name);
      actions = h(
        "td",
        {},
        w.locked
          ? act("Unlock", () => api.send("POST", `/workers/${name}/unlock`))
          : [
              act("Drain", () => api.send("POST", `/workers/${name}/lock`, { mode: "drain" })),
              " ",
              act("Purge", () => api.send("POST", `/workers/${name}/lock`, { mode: "purge" })),
            ],
      );
    }
    return h(
      "tr",
      { "data-worker": w.name },
      h("td", {}, w.name),
      h("td", {}, w.cluster),
      h("td", {}, h("span", { class: `badge w-${w.state}` }, state)),
      h("td", { class: "num" }, meter(w.used, w.slots, `${num(w.used)} of ${w.slots} slots used`), ` ${num(w.used)}/${w.slots}`),
      h("td", { class: "num" }, hostLoad(w.load)),
      h("td", {}, runningLinks(w.running)),
      h("td", {}, w.types.join(", ") || "-"),
      h("td", {}, releases.join(", ") || "-", failures.length ? h("div", { class: "bad" }, failures.join("; ")) : null),
      actions,
    );
  }

  onWorkers() {
    this.refresher.kick();
  }

  close() {
    this.refresher.closed = true;
  }
}

export class ClustersView {
  constructor(root, params, context) {
    this.root = root;
    this.context = context;
    this.tree = h("ul", { class: "tree", "aria-label": "cluster tree" });
    clear(
      root,
      h("h1", {}, "Clusters"),
      h(
        "p",
        { class: "muted" },
        "Each node's share of the farm: the slots its workers own (used by anyone: the bar), " +
          "what its jobs use, what it lends to other clusters and borrows from them, and its queue.",
      ),
      this.tree,
    );
    this.refresher = new Refresher(() => this.load(), context.failed);
  }

  async load() {
    const nodes = await api.get("/clusters");
    if (this.refresher.closed) return;
    nodes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    clear(
      this.tree,
      nodes.map((node) => {
        const depth = node.path === "/" ? 0 : node.path.split("/").length - 1;
        const s = node.shares;
        const busy = s.slots - s.free;
        const name = node.path === "/" ? "/" : node.path.slice(node.path.lastIndexOf("/") + 1);
        const item = h(
          "li",
          { "data-cluster": node.path },
          h("span", { class: "path", title: node.path }, name),
          meter(busy, s.slots, `${num(busy)} of ${num(s.slots)} owned slots busy`),
          h(
            "span",
            { class: "shares" },
            `slots ${num(s.slots)} · used ${num(s.used)} · lent ${num(s.lent)} · ` +
              `borrowed ${num(s.borrowed)} · queued ${s.queued} · ` +
              `${node.workers_total} workers · ${node.jobs_total} jobs`,
          ),
          h(
            "a",
            { href: `?view=jobs&cluster=${encodeURIComponent(node.path)}`, "data-nav": "" },
            "jobs",
          ),
        );
        item.style.paddingLeft = `${0.6 + depth * 1.5}rem`;
        return item;
      }),
    );
  }

  onClusters() {
    this.refresher.kick();
  }

  close() {
    this.refresher.closed = true;
  }
}

// CPU busy (a bar) and memory used of the host, as its agent last reported them
// (`host_load`, every two heartbeats); "-" before the first report.
function hostLoad(load) {
  if (!load) return "-";
  const gib = (bytes) => (bytes / 2 ** 30).toFixed(1);
  const cpu = Math.round(load.cpu * 100);
  return [
    meter(load.cpu, 1, `CPU ${cpu}% busy`),
    ` ${cpu}% · ${gib(load.memory_used)}/${gib(load.memory_total)} GiB`,
  ];
}
