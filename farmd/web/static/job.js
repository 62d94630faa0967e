// The job view: its summary, dependencies and sub-jobs, why it does not run (explain),
// its frames as a grid (grid.js), a frame's facts and its log, and the actions the
// logged-in person may take.
//
// Frames come a page at a time (GET /api/v1/jobs/ID?frame_limit&frame_after). On a
// `jobs` notice naming this job, the summary is fetched again (one frame) and, of the
// frame pages, only those holding a frame that has not completed (a complete frame
// changes only by an action on it, which names the job again); notices that come while
// that runs are merged, and a large job is refreshed at most once every BIG_GAP.
//
// The log panel follows a running frame: it fetches the log's end, then what follows
// (`offset`: the last answer's `size`) on each notice for the job and every second
// while the answer says the frame runs; it stops when the frame no longer runs or the
// panel closes.

import * as api from "./api.js";
import { FrameGrid, describe } from "./grid.js";
import { clear, duration, h, jobLink, progressBar, stateBadge, total, when } from "./util.js";

const FRAME_PAGE = 2500;
const BIG_GAP = 1000; // ms between two refreshes of a job of more than one frame page
const LOG_EVERY = 1000; // ms between two log fetches of a running frame
const LOG_CHARS = 1 << 20; // the log panel keeps the last this many characters
const ENDED = ["complete", "failed", "killed"];
const CONTROLS = ["kill", "retry", "block", "unblock", "suspend", "resume"];

function dl(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(Boolean).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

export class JobView {
  constructor(root, params, context) {
    this.root = root;
    this.context = context;
    this.id = Number(params.get("id"));
    this.wanted = params.has("frame") ? Number(params.get("frame")) : null;
    this.job = null;
    this.pages = []; // [{after, entries}]
    this.closed = false;
    this.busy = false;
    this.again = false;
    this.lastRefresh = 0;
    this.log = null; // {frame, size, running, timer, busy}
    this.loaded = false; // every frame page fetched once
    this.missed = false; // a notice for this job came before that
    this.build();
  }

  build() {
    this.summary = h("section", { class: "summary", "aria-label": "job summary" });
    this.actions = h("section", { class: "actions", "aria-label": "job actions" });
    this.explainBox = h("section", { class: "explain", "aria-label": "explain" });
    this.grid = new FrameGrid((entry) => this.openFrame(entry));
    this.gridNote = h("p", { class: "muted" });
    const legend = h(
      "ul",
      { class: "legend", "aria-label": "frame colours" },
      ["complete", "running", "failed", "killed", "blocked", "suspended", "pending"].map((s) =>
        h("li", {}, h("span", { class: `swatch s-${s}` }), s),
      ),
    );
    const frameInput = h("input", { type: "number", min: 0, id: "goto", size: 6 });
    const go = h(
      "form",
      { class: "goto" },
      h("label", { for: "goto" }, "Frame"),
      frameInput,
      h("button", { type: "submit" }, "Show"),
    );
    go.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!this.grid.selectFrame(Number(frameInput.value))) {
        this.context.failed(new Error(`job ${this.id} has no frame ${frameInput.value}`));
      }
    });
    this.frameBox = h("section", { class: "frame", "aria-label": "frame", hidden: true });
    clear(
      this.root,
      h("p", {}, h("a", { href: "?view=jobs", "data-nav": "" }, "← Jobs")),
      this.summary,
      this.actions,
      this.explainBox,
      h(
        "section",
        { class: "frames", "aria-label": "frames" },
        h("h2", {}, "Frames"),
        legend,
        go,
        this.grid.node,
        this.gridNote,
      ),
      this.frameBox,
    );
  }

  async load() {
    const started = performance.now();
    const job = await api.get(`/jobs/${this.id}`, { frame_limit: FRAME_PAGE });
    if (this.closed) return;
    this.pages = [{ after: null, entries: job.frame_list }];
    let next = job.frame_next;
    // bounded: a page holds FRAME_PAGE entries, so this ends after total/FRAME_PAGE asks
    for (let i = 0; next !== null && i <= job.frame_list_total / FRAME_PAGE; i++) {
      const page = await api.get(`/jobs/${this.id}`, {
        frame_limit: FRAME_PAGE,
        frame_after: next,
      });
      if (this.closed) return;
      this.pages.push({ after: next, entries: page.frame_list });
      next = page.frame_next;
    }
    this.show(job);
    this.grid.set(this.entries());
    this.gridNote.textContent =
      `${job.frame_list_total} ${job.chunk > 1 ? "chunks" : "frames"}; ` +
      `fetched in ${Math.round(performance.now() - started)} ms, ` +
      `drawn in ${this.grid.drawMs.toFixed(1)} ms`;
    this.lastRefresh = performance.now();
    this.loaded = true;
    if (this.missed) this.refresh(); // a notice came while the pages were being fetched
    this.missed = false;
    if (["pending", "waiting", "blocked"].includes(job.state)) this.explain();
    if (this.wanted !== null) {
      const frame = this.wanted;
      this.wanted = null;
      this.grid.selectFrame(frame);
    }
  }

  entries() {
    return this.pages.flatMap((page) => page.entries);
  }

  show(job) {
    this.job = job;
    const done = job.frames.complete || 0;
    const links = (ids) =>
      ids.length ? ids.flatMap((id, i) => [i ? ", " : "", jobLink(id)]) : "-";
    const deps = job.depends_on.flatMap((dep, i) => [
      i ? ", " : "",
      jobLink(Number(dep.split(":")[0]), dep),
    ]);
    const subjobs = job.subjob_ids.slice(0, 200);
    clear(
      this.summary,
      h("h1", {}, `Job ${job.id}: ${job.name} `, stateBadge(job.state)),
      h("div", { class: "wide" }, progressBar(job.frames)),
      dl([
        ["Done", `${done}/${total(job.frames)} (${Math.round(job.progress * 100)}%)`],
        ["Elapsed", duration(job.elapsed)],
        ["ETA", job.eta === null ? "-" : duration(job.eta)],
        ["Reason", job.reason || "-"],
        ["Owner", job.owner || "-"],
        ["Cluster", job.cluster],
        ["Priority", job.priority],
        ["Submitted", when(job.submitted_at)],
        ["Started", when(job.started_at)],
        ["Ended", when(job.ended_at)],
        ["Command", h("code", {}, job.argv.join(" ") || "-")],
        job.job_type && ["Type", job.release ? `${job.job_type} (${job.release})` : job.job_type],
        ["Reserve", job.reserve],
        job.requires && ["Requires", job.requires],
        job.restrictions && ["Restrictions", job.restrictions],
        ["Depends on", deps.length ? deps : "-"],
        job.waiting_on.length && ["Waiting on", links(job.waiting_on)],
        job.parent !== null && ["Parent", jobLink(job.parent)],
        job.subjobs && [
          "Sub-jobs",
          [links(subjobs), job.subjob_ids.length > subjobs.length ? " …" : ""],
        ],
      ]),
    );
    this.drawActions(job);
  }

  drawActions(job) {
    const { can } = this.context;
    const buttons = [];
    const ended = ENDED.includes(job.state);
    if (can("control jobs")) {
      for (const action of CONTROLS) {
        const disabled =
          (action === "kill" && ended) ||
          (action === "retry" && !(job.frames.failed || job.frames.killed));
        buttons.push(
          h(
            "button",
            {
              type: "button",
              "data-action": action,
              disabled,
              onclick: () => this.control(action, String(job.id)),
            },
            action[0].toUpperCase() + action.slice(1),
          ),
        );
      }
    }
    const forms = [];
    if (can("modify jobs")) {
      forms.push(
        this.setter("priority", "Priority", job.priority, (value) => ({ priority: Number(value) })),
      );
    }
    if (can("move jobs between clusters")) {
      forms.push(this.setter("cluster", "Cluster", job.cluster, (value) => ({ cluster: value })));
    }
    if (can("remove jobs") && ended) {
      buttons.push(
        h("button", { type: "button", "data-action": "remove", onclick: () => this.remove() }, "Remove"),
      );
    }
    clear(this.actions, buttons.length || forms.length ? [h("h2", {}, "Actions"), buttons, forms] : null);
  }

  setter(name, label, value, body) {
    const input = h("input", { id: `set-${name}`, value, size: 12 });
    const form = h(
      "form",
      { class: "setter" },
      h("label", { for: `set-${name}` }, label),
      input,
      h("button", { type: "submit" }, "Set"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const done = await this.context.act(() =>
        api.send("PATCH", `/jobs/${this.id}`, body(input.value.trim())),
      );
      if (done) this.refresh();
    });
    return form;
  }

  async control(action, target) {
    const done = await this.context.act(() =>
      action === "kill" && !target.includes(":")
        ? api.send("POST", `/jobs/${this.id}/kill`)
        : api.send("POST", "/control", { action, targets: [target] }),
    );
    if (done) this.refresh();
  }

  async remove() {
    const done = await this.context.act(() => api.send("DELETE", `/jobs/${this.id}`));
    if (done) this.context.navigate("?view=jobs");
  }

  async explain() {
    const box = this.explainBox;
    const button = h("button", { type: "button", onclick: () => this.explain() }, "Explain again");
    try {
      const found = await api.get(`/jobs/${this.id}/explain`);
      if (this.closed) return;
      const rows = found.workers.map((w) =>
        h(
          "tr",
          {},
          h("td", {}, w.worker),
          h("td", {}, w.cluster),
          h("td", {}, w.runs ? `runs ${w.running.join(", ")}` : ""),
          h("td", {}, w.reasons.length ? w.reasons.join("; ") : "nothing holds it back here"),
        ),
      );
      clear(
        box,
        h("h2", {}, "Why it is not running"),
        found.everywhere.length ? h("ul", {}, found.everywhere.map((r) => h("li", {}, r))) : null,
        rows.length
          ? h(
              "table",
              { class: "explain" },
              h("thead", {}, h("tr", {}, ["Worker", "Cluster", "Runs", "Reasons"].map((t) => h("th", { scope: "col" }, t)))),
              h("tbody", {}, rows),
            )
          : h("p", { class: "muted" }, "No worker is connected."),
        button,
      );
    } catch (error) {
      this.context.failed(error);
    }
  }

  onJobs(ids) {
    if (ids !== null && !ids.includes(this.id)) return;
    if (!this.loaded) {
      this.missed = true;
      return;
    }
    this.refresh();
    if (this.log && this.log.running) this.fetchLog();
  }

  async refresh() {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    try {
      do {
        this.again = false;
        const big = this.pages.length > 1;
        const wait = big ? this.lastRefresh + BIG_GAP - performance.now() : 0;
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (this.closed) return;
        this.lastRefresh = performance.now();
        await this.refreshOnce();
      } while (this.again && !this.closed);
    } catch (error) {
      this.context.failed(error);
    } finally {
      this.busy = false;
    }
  }

  async refreshOnce() {
    const job = await api.get(`/jobs/${this.id}`, { frame_limit: 1 });
    if (this.closed) return;
    const stale = this.pages.filter((page) => page.entries.some((e) => e.state !== "complete"));
    const fresh = await Promise.all(
      stale.map((page) =>
        api.get(`/jobs/${this.id}`, { frame_limit: FRAME_PAGE, frame_after: page.after }),
      ),
    );
    if (this.closed) return;
    stale.forEach((page, i) => {
      page.entries = fresh[i].frame_list;
    });
    this.show(job);
    this.grid.set(this.entries());
    const selected = this.grid.entries[this.grid.selected];
    if (selected && this.frame === selected.frame) {
      this.showFrame(selected);
      // a frame that started (again) since its log was last read: follow it anew
      if (selected.state === "running" && this.log && !this.log.running) {
        this.followLog(selected.frame);
      }
    }
  }

  openFrame(entry) {
    const query = new URLSearchParams(location.search);
    query.set("frame", entry.frame);
    history.replaceState(null, "", `?${query}`);
    const opened = this.frame !== entry.frame;
    this.frame = entry.frame;
    this.frameBox.hidden = false;
    this.logText = h("pre", { class: "log", tabindex: 0, "aria-label": `log of frame ${entry.frame}` });
    this.logState = h("p", { class: "muted", "aria-live": "polite" });
    this.frameFacts = h("div");
    clear(
      this.frameBox,
      h("h2", {}, `Frame ${entry.frames}`),
      this.frameFacts,
      h("h3", {}, "Log"),
      this.logState,
      this.logText,
    );
    this.showFrame(entry);
    if (opened || !this.log) this.followLog(entry.frame);
  }

  showFrame(entry) {
    const { can } = this.context;
    const target = `${this.id}:${entry.frame}`;
    const buttons = can("control jobs")
      ? CONTROLS.map((action) =>
          h(
            "button",
            { type: "button", "data-frame-action": action, onclick: () => this.control(action, target) },
            action[0].toUpperCase() + action.slice(1),
          ),
        )
      : [];
    clear(
      this.frameFacts,
      h("p", {}, stateBadge(entry.state), " ", describe(entry).slice(1).join(" · ")),
      dl([
        ["Exit code", entry.exit_code === null ? "-" : entry.exit_code],
        entry.retry_at !== null && ["Retry at", when(entry.retry_at)],
        entry.waits && ["Waits for", `${entry.waits} frames of other jobs`],
      ]),
      buttons.length ? h("div", { class: "frame-actions" }, buttons) : null,
    );
  }

  followLog(frame) {
    this.stopLog();
    this.log = { frame, size: null, running: false, timer: null, busy: false };
    this.fetchLog();
  }

  async fetchLog() {
    const log = this.log;
    if (!log || log.busy) return;
    log.busy = true;
    clearTimeout(log.timer);
    try {
      const params = log.size === null ? {} : { offset: log.size };
      const found = await api.get(`/jobs/${this.id}/frames/${log.frame}/log`, params);
      if (this.log !== log || this.closed) return;
      const text = found.text || "";
      if (log.size === null) this.logText.textContent = text;
      else if (text) this.logText.append(text);
      if (this.logText.textContent.length > LOG_CHARS) {
        this.logText.textContent = this.logText.textContent.slice(-LOG_CHARS);
      }
      log.size = found.size;
      log.running = Boolean(found.running);
      this.logText.scrollTop = this.logText.scrollHeight;
      this.logState.textContent = log.running
        ? `following (worker ${found.worker || "-"}, attempt ${found.attempt ?? "-"})`
        : `from worker ${found.worker || "-"}, attempt ${found.attempt ?? "-"}; the frame is not running`;
      if (!log.running && !this.logText.textContent) this.logState.textContent += " (its log is empty)";
      this.logState.dataset.running = String(log.running);
      if (log.running) log.timer = setTimeout(() => this.fetchLog(), LOG_EVERY);
    } catch (error) {
      if (this.log === log) {
        log.running = false;
        this.logState.textContent = error.message;
      }
    } finally {
      log.busy = false;
    }
  }

  stopLog() {
    if (this.log) clearTimeout(this.log.timer);
    this.log = null;
  }

  close() {
    this.closed = true;
    this.stopLog();
    this.grid.close();
  }
}
