// The jobs view: a page of jobs (GET /api/v1/jobs), filtered by cluster subtree, state,
// owner and text, the filters and the page's start kept in the URL.
//
// Live: a `jobs` notice names the ids that changed. The rows of those ids on this page
// are fetched again one by one (GET /api/v1/jobs/ID with one frame), and the page as a
// whole only when that is cheaper or needed: the notice names no ids (too many
// changed), more than REFETCH_PAGE of them are on the page, a job left the filter or
// was removed, or a new job may belong on this (last, not full) page. Notices that come
// while a refresh runs are merged and handled after it, so a busy farm costs at most
// one refresh in flight per page.

import * as api from "./api.js";
import { clear, duration, h, jobLink, progressBar, stateBadge, total } from "./util.js";

const PAGE = 50;
const REFETCH_PAGE = 20; // more changed rows than this: fetch the page in one call
const JOB_STATES = [
  "waiting",
  "pending",
  "running",
  "blocked",
  "suspended",
  "complete",
  "failed",
  "killed",
];
const FILTERS = ["cluster", "state", "owner", "q"];

function within(cluster, root) {
  if (!root || root === "/") return true;
  const base = root.replace(/\/+$/, "");
  return cluster === base || cluster.startsWith(base + "/");
}

export class JobsView {
  constructor(root, params, context) {
    this.root = root;
    this.context = context;
    this.filters = {};
    for (const name of FILTERS) this.filters[name] = params.get(name) || "";
    this.after = params.get("after") || "";
    this.rows = new Map(); // job id -> <tr>
    this.page = null;
    this.pending = new Set();
    this.everything = false;
    this.busy = false;
    this.closed = false;
    this.build();
  }

  build() {
    const field = (name, label, input) =>
      h("label", { class: "field" }, h("span", {}, label), input);
    this.inputs = {
      cluster: h("input", { name: "cluster", value: this.filters.cluster, placeholder: "/show1" }),
      state: h(
        "select",
        { name: "state" },
        h("option", { value: "" }, "any"),
        JOB_STATES.map((state) =>
          h("option", { value: state, selected: this.filters.state === state }, state),
        ),
      ),
      owner: h("input", { name: "owner", value: this.filters.owner, size: 10 }),
      q: h("input", { name: "q", value: this.filters.q, type: "search", placeholder: "name" }),
    };
    const form = h(
      "form",
      { class: "filters", role: "search", "aria-label": "filter jobs" },
      field("cluster", "Cluster", this.inputs.cluster),
      field("state", "State", this.inputs.state),
      field("owner", "Owner", this.inputs.owner),
      field("q", "Text", this.inputs.q),
      h("button", { type: "submit" }, "Filter"),
      h("button", { type: "button", class: "link", onclick: () => this.go({}) }, "Clear"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const wanted = {};
      for (const name of FILTERS) wanted[name] = this.inputs[name].value.trim();
      this.go(wanted);
    });
    this.counts = h("p", { class: "counts", "aria-live": "polite" });
    this.body = h("tbody");
    const column = (text, cls) => h("th", { scope: "col", class: cls }, text);
    this.table = h(
      "table",
      { class: "jobs", "aria-label": "jobs" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          column("ID", "num"),
          column("Name"),
          column("State"),
          column("Progress", "progress"),
          column("Done", "num"),
          column("Elapsed", "num"),
          column("ETA", "num"),
          column("Owner"),
          column("Cluster"),
          column("Priority", "num"),
          column("Reason"),
        ),
      ),
      this.body,
    );
    this.pager = h("nav", { class: "pager", "aria-label": "pages" });
    clear(this.root, h("h1", {}, "Jobs"), form, this.counts, this.table, this.pager);
  }

  // the URL for these filters (and a page start), shown at once
  go(filters, after) {
    const query = new URLSearchParams({ view: "jobs" });
    for (const name of FILTERS) if (filters[name]) query.set(name, filters[name]);
    if (after) query.set("after", after);
    this.context.navigate(`?${query}`);
  }

  params() {
    return { ...this.filters, limit: PAGE, after: this.after };
  }

  async load() {
    const page = await api.get("/jobs", this.params());
    if (this.closed) return;
    this.page = page;
    this.draw();
  }

  draw() {
    const page = this.page;
    this.rows.clear();
    const rows = page.jobs.map((job) => {
      const row = this.row(job);
      this.rows.set(job.id, row);
      return row;
    });
    if (!rows.length) {
      const text =
        page.next === null
          ? "No jobs match."
          : `No match among the ${page.scanned} jobs read; the next page goes on.`;
      rows.push(h("tr", {}, h("td", { colspan: 11, class: "muted" }, text)));
    }
    clear(this.body, rows);
    this.drawCounts(page);
    const filters = this.filters;
    clear(
      this.pager,
      this.after
        ? h("button", { type: "button", onclick: () => this.go(filters) }, "First page")
        : null,
      page.next !== null
        ? h("button", { type: "button", onclick: () => this.go(filters, page.next) }, "Next page")
        : null,
    );
  }

  drawCounts(page) {
    const parts = JOB_STATES.filter((state) => page.counts[state]).map(
      (state) => `${page.counts[state]} ${state}`,
    );
    this.counts.textContent = `${page.total} jobs in the farm${parts.length ? ": " : ""}${parts.join(", ")}`;
  }

  row(job) {
    const done = job.frames.complete || 0;
    const cells = [
      h("td", { class: "num" }, jobLink(job.id)),
      h("td", { class: "name" }, jobLink(job.id, job.name)),
      h("td", {}, stateBadge(job.state)),
      h("td", { class: "progress" }, progressBar(job.frames)),
      h("td", { class: "num" }, `${done}/${total(job.frames)}`),
      h("td", { class: "num" }, duration(job.elapsed)),
      h("td", { class: "num" }, job.eta === null ? "-" : duration(job.eta)),
      h("td", {}, job.owner || "-"),
      h("td", {}, job.cluster),
      h("td", { class: "num" }, job.priority),
      h("td", { class: "reason" }, job.reason || ""),
    ];
    return h("tr", { "data-job": job.id, "data-state": job.state }, cells);
  }

  matches(job) {
    const f = this.filters;
    return (
      within(job.cluster, f.cluster) &&
      (!f.state || f.state.split(",").includes(job.state)) &&
      (!f.owner || job.owner === f.owner) &&
      (!f.q || job.name.toLowerCase().includes(f.q.toLowerCase()))
    );
  }

  onJobs(ids) {
    if (ids === null) this.everything = true;
    else for (const id of ids) this.pending.add(id);
    this.refresh();
  }

  async refresh() {
    if (this.busy || this.closed) return;
    this.busy = true;
    try {
      while (!this.closed && (this.everything || this.pending.size)) {
        const everything = this.everything;
        const ids = [...this.pending];
        this.everything = false;
        this.pending.clear();
        if (everything || (await this.refreshRows(ids))) await this.load();
      }
    } catch (error) {
      this.context.failed(error);
    } finally {
      this.busy = false;
    }
  }

  // Fetch the changed rows of this page; true if the whole page must be fetched instead.
  async refreshRows(ids) {
    const page = this.page;
    if (!page) return true;
    const shown = ids.filter((id) => this.rows.has(id));
    const last = page.jobs.length ? page.jobs[page.jobs.length - 1].id : 0;
    const roomy = page.next === null && page.jobs.length < PAGE;
    if (roomy && ids.some((id) => id > last)) return true; // a new job may belong here
    if (shown.length > REFETCH_PAGE) return true;
    // the farm's counts (unfiltered), beside the rows; a failure leaves the old ones
    const counts = api.get("/jobs", { limit: 1 }).catch(() => null);
    const jobs = await Promise.all(
      shown.map((id) =>
        api.get(`/jobs/${id}`, { frame_limit: 1 }).catch((error) => {
          if (error instanceof api.ApiError && error.status === 404) return null; // removed
          throw error;
        }),
      ),
    );
    if (this.closed) return false;
    for (const job of jobs) {
      if (job === null || !this.matches(job)) return true;
      const index = page.jobs.findIndex((old) => old.id === job.id);
      if (index >= 0) page.jobs[index] = job;
      const row = this.rows.get(job.id);
      const fresh = this.row(job);
      row.replaceWith(fresh);
      this.rows.set(job.id, fresh);
    }
    const head = await counts;
    if (head && !this.closed) this.drawCounts(head);
    return false;
  }

  close() {
    this.closed = true;
  }
}
