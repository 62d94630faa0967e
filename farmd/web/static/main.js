// The dashboard: who is logged in, which view shows, and the live notices it hears.
//
// One page; the view and its filters live in the URL's query string (`?view=job&id=3`,
// `?state=running&owner=ana`), so a reload or a shared link shows the same thing.
// Links marked `data-nav` change the URL with history.pushState and draw the view
// again without loading the page. The server's change notices (api.js EventStream)
// go to the view on screen, which fetches what it shows of what changed.
//
// Who may do what comes from GET /api/v1/me: a view shows the controls of the
// actions listed there and no others (the server refuses the rest anyway).

import * as api from "./api.js";
import { clear, h } from "./util.js";
import { JobsView } from "./jobs.js";
import { JobView } from "./job.js";
import { ClustersView, WorkersView } from "./farm.js";

const VIEWS = { jobs: JobsView, job: JobView, workers: WorkersView, clusters: ClustersView };

const main = document.getElementById("main");
const who = document.getElementById("who");
const nav = document.getElementById("nav");
const errorLine = document.getElementById("error");
const live = document.getElementById("live");

let me = null;
let view = null;
let stream = null;

export function showError(message) {
  errorLine.textContent = message || "";
  errorLine.hidden = !message;
}

// The context a view gets: who is logged in, and how to act and report.
const context = {
  get me() {
    return me;
  },
  can(action) {
    return Boolean(me && me.actions.includes(action));
  },
  // Run `call` (an API call that changes something); its refusal becomes the error line.
  async act(call) {
    showError("");
    try {
      return await call();
    } catch (error) {
      failed(error);
      return undefined;
    }
  },
  failed,
  navigate,
};

function failed(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    loggedOut(error.message);
    return;
  }
  showError(error.message || String(error));
}

export function navigate(href, replace = false) {
  const target = new URL(href, location.href);
  if (replace) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  render();
}

function render() {
  if (!me) return;
  if (view) view.close();
  showError("");
  const params = new URLSearchParams(location.search);
  let name = params.get("view") || "jobs";
  if (!(name in VIEWS)) name = "jobs";
  for (const link of nav.querySelectorAll("a")) {
    const current = link.dataset.view === name || (name === "job" && link.dataset.view === "jobs");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  view = new VIEWS[name](main, params, context);
  view.load().catch(failed);
}

function loginForm(message) {
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    size: 48,
  });
  const note = h("p", { class: "muted" }, message || "");
  const form = h(
    "form",
    { class: "login", "aria-label": "log in" },
    h("h1", {}, "Log in to farmd"),
    h(
      "p",
      {},
      "Paste a token: your personal token (farmd user add), or the farm's (STATE/token).",
    ),
    h("label", { for: "token" }, "Token"),
    input,
    h("button", { type: "submit" }, "Log in"),
    note,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    try {
      await api.login(input.value.trim());
      input.value = "";
      await start();
    } catch (error) {
      showError(error.message);
    }
  });
  return form;
}

function loggedOut(message) {
  me = null;
  if (view) view.close();
  view = null;
  if (stream) stream.close();
  stream = null;
  nav.hidden = true;
  clear(who);
  live.hidden = true;
  clear(main, loginForm(message));
  document.getElementById("token").focus();
}

function header() {
  nav.hidden = false;
  const role = me.admin ? "admin" : me.role;
  const button = h("button", { type: "button", class: "link" }, "Log out");
  button.addEventListener("click", async () => {
    try {
      await api.logout();
    } catch {
      // the cookie is cleared on the server's side or already gone: log out anyway
    }
    loggedOut("Logged out.");
  });
  clear(who, h("span", {}, `${me.user || me.who} (${role})`), " ", button);
}

function openStream() {
  stream = new api.EventStream({
    jobs: (ids) => view && view.onJobs && view.onJobs(ids),
    workers: () => view && view.onWorkers && view.onWorkers(),
    clusters: () => view && view.onClusters && view.onClusters(),
    opened: (again) => {
      live.textContent = "live";
      live.className = "live on";
      if (again && view) view.load().catch(failed); // notices may have been missed
    },
    dropped: () => {
      live.textContent = "reconnecting";
      live.className = "live off";
      // a refused stream (the token revoked, the cookie gone) means: log in again
      api.get("/me").catch((error) => {
        if (error instanceof api.ApiError && error.status === 401) failed(error);
      });
    },
  });
  live.hidden = false;
  stream.open();
}

async function start() {
  try {
    me = await api.get("/me");
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 401) {
      loggedOut("");
      return;
    }
    showError(error.message);
    return;
  }
  header();
  openStream();
  render();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest("a[data-nav]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", render);

start();
