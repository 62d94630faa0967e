// The JSON API as the page uses it, and the live change notices.
//
// Every call goes to /api/v1 on this origin with the login cookie; a call that changes
// something carries `X-Farmd-Request: 1` (the server refuses a cookie request without
// it: a cross-site form cannot set a header). A refusal becomes an ApiError whose
// message is the API's own one line, shown as it is.
//
// Notices (`EventStream`) come from GET /api/v1/events: `jobs` (ids that changed, or
// null: too many to name), `workers`, `clusters`. They say what changed, never how,
// so the page fetches what it shows of that. The page never polls: when the stream
// drops it is opened again after a delay that doubles up to 30 s, and the view is
// fetched once again then (notices may have been missed meanwhile).

export const V1 = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function answer(response) {
  let body = null;
  const text = await response.text();
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    const error = body && body.error;
    const message = error ? error.message : `HTTP ${response.status} ${response.statusText}`;
    throw new ApiError(response.status, error ? error.code : "http", message);
  }
  return body;
}

function url(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return `${V1}${path}${text ? "?" + text : ""}`;
}

export async function get(path, params) {
  const response = await fetch(url(path, params), {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  return answer(response);
}

export async function send(method, path, body) {
  const init = {
    method,
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-Farmd-Request": "1" },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return answer(await fetch(url(path), init));
}

export const login = (token) => send("POST", "/login", { token });
export const logout = () => send("POST", "/logout");

const MAX_BACKOFF = 30_000;

export class EventStream {
  // `handlers`: {jobs(ids), workers(), clusters(), opened(again), dropped()}
  constructor(handlers) {
    this.handlers = handlers;
    this.source = null;
    this.backoff = 1000;
    this.timer = null;
    this.opened = false;
    this.closed = false;
  }

  open() {
    if (this.closed) return;
    const source = new EventSource(`${V1}/events`, { withCredentials: true });
    this.source = source;
    source.addEventListener("open", () => {
      this.backoff = 1000;
      const again = this.opened;
      this.opened = true;
      this.handlers.opened(again);
    });
    source.addEventListener("jobs", (event) => {
      let ids = null;
      try {
        ids = JSON.parse(event.data).ids;
      } catch {
        ids = null;
      }
      this.handlers.jobs(ids);
    });
    source.addEventListener("workers", () => this.handlers.workers());
    source.addEventListener("clusters", () => this.handlers.clusters());
    source.addEventListener("error", () => {
      this.handlers.dropped();
      if (source.readyState === EventSource.CLOSED) {
        // the browser gave up (a refusal, or the server gone): open it again, later
        source.close();
        this.timer = setTimeout(() => this.open(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
      }
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
  }
}
