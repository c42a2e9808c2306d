// The dashboard's one way to the server: the same HTTP API as every client. The auth key (when
// the server has one) lives in this tab's session storage and goes in the Authorization header;
// streams use per-job stream tokens, never the key in a URL.

const KEY = "zserve.key";
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = typeof problem === "object" && problem ? problem.detail || problem.title : problem;
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export const auth = {
  key: () => sessionStorage.getItem(KEY),
  set(key) {
    sessionStorage.setItem(KEY, key);
    listeners.forEach((f) => f(false));
  },
  forget() {
    sessionStorage.removeItem(KEY);
  },
  // told (true) when a call was refused for want of the right key
  onNeeded(f) {
    listeners.add(f);
    return () => listeners.delete(f);
  },
};

function headers(extra = {}) {
  const found = { Accept: "application/json", ...extra };
  const key = auth.key();
  if (key) found.Authorization = `Bearer ${key}`;
  return found;
}

// A call: the JSON answer, or ApiError with the problem document.
export async function api(path, { method = "GET", body, headers: extra, raw = false } = {}) {
  const init = { method, headers: headers(extra) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  if (answer.status === 401) listeners.forEach((f) => f(true));
  if (raw) return answer;
  const type = answer.headers.get("content-type") || "";
  const doc = answer.status === 204 ? null : type.includes("json") ? await answer.json() : await answer.text();
  if (!answer.ok) throw new ApiError(answer.status, doc);
  return doc;
}

// Whether the server asks for a key: /info answers 401 without a right one.
export async function keyNeeded() {
  const answer = await fetch("/info", { headers: headers() });
  return answer.status === 401;
}

// Follow a job's events live: onEvent(event) once per event, in seq order, never twice (a
// reconnect resumes after the last seq seen); onEnd() after the terminal event. Returns a
// function that stops following.
export function follow(jobId, onEvent, onEnd = () => {}) {
  let source = null;
  let last = 0;
  let stopped = false;
  const TYPES = ["job.queued", "job.started", "step.started", "step.completed", "step.failed",
    "step.chunk", "step.progress", "job.completed", "job.failed", "job.cancelled"];
  const TERMINAL = new Set(["job.completed", "job.failed", "job.cancelled"]);

  async function open() {
    if (stopped) return;
    let url = `/stream/${encodeURIComponent(jobId)}`;
    if (auth.key()) {
      const { token } = await api(`/jobs/${encodeURIComponent(jobId)}/token`, { method: "POST" });
      url += `?token=${encodeURIComponent(token)}`;
      if (stopped) return; // stopped while the token was on its way
    }
    source = new EventSource(url);
    const take = (message) => {
      const event = JSON.parse(message.data);
      if (event.seq <= last) return; // seen already (a resume that starts earlier)
      last = event.seq;
      onEvent(event);
      if (TERMINAL.has(event.event)) {
        stop();
        onEnd();
      }
    };
    TYPES.forEach((t) => source.addEventListener(t, take));
    source.onmessage = take;
    source.onerror = () => {
      // The browser reconnects by itself (with Last-Event-ID) unless the stream was refused
      // (a token run out, a 204): then open again, and skip what was seen.
      if (source.readyState === EventSource.CLOSED && !stopped) retry();
    };
  }

  function stop() {
    stopped = true;
    if (source) source.close();
  }

  // again in a second, for as long as it fails (a stream token asked while the server is away)
  function retry() {
    setTimeout(() => open().catch(retry), 1000);
  }

  open().catch(retry);
  return stop;
}

// Download an artifact through an authenticated fetch (the key never goes in a URL).
export async function download(path, filename) {
  const answer = await api(path, { raw: true });
  if (!answer.ok) throw new ApiError(answer.status, await answer.text());
  const url = URL.createObjectURL(await answer.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
