// Jobs: a live list of the server's jobs (filtered by status, paged with the `next` cursor) and a
// job page that follows the job's events live over SSE (api.js `follow`): steps lighting up as
// they start and finish, streamed chunks, progress bars, the outputs or the error, and Cancel.
import { html, useEffect, useRef, useState } from "../vendor/htm-preact.module.js";
import { api, follow } from "../api.js";

const STATUSES = ["queued", "running", "completed", "failed", "cancelled"];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const REFRESH_MS = 2500;
const PAGE_SIZE = 20;

const enc = encodeURIComponent;
const ms = (iso) => (iso ? Date.parse(iso) : NaN);

// "850 ms", "4.2 s", "3 min 5 s", "2 h 10 min"
export function span(millis) {
  if (!Number.isFinite(millis) || millis < 0) return "";
  if (millis < 1000) return `${Math.round(millis)} ms`;
  const s = millis / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

// How long a job ran (or has been running).
function duration(job, now) {
  const start = ms(job.started_at);
  if (!Number.isFinite(start)) return "";
  const end = ms(job.finished_at);
  return span((Number.isFinite(end) ? end : now) - start) + (Number.isFinite(end) ? "" : " …");
}

function Status({ status }) {
  return html`<span class=${`status status-${status}`}>${status}</span>`;
}

// -- the list -----------------------------------------------------------------------------------

export function Jobs() {
  const [status, setStatus] = useState("");
  const [cursors, setCursors] = useState([null]); // the cursor of each page up to this one
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const [now, setNow] = useState(Date.now());
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    let live = true;
    let timer = null;
    const load = async () => {
      if (document.hidden) { // nobody looks: ask again later
        timer = setTimeout(load, REFRESH_MS);
        return;
      }
      const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (status) query.set("status", status);
      if (cursor) query.set("cursor", cursor);
      try {
        const answer = await api(`/jobs?${query}`);
        if (!live) return;
        setPage(answer);
        setError(null);
      } catch (e) {
        if (live) setError(e.message);
      }
      if (live) {
        setNow(Date.now());
        timer = setTimeout(load, REFRESH_MS);
      }
    };
    load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [status, cursor]);

  const choose = (e) => {
    setStatus(e.target.value);
    setCursors([null]);
    setPage(null);
  };
  const jobs = page ? page.jobs : [];
  return html`<h1>Jobs</h1>
    <div class="jobs-bar">
      <label>Status <select name="status" value=${status} onChange=${choose}>
        <option value="">all</option>
        ${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select></label>
      <span class="muted">refreshed every ${REFRESH_MS / 1000} s</span>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${page === null && !error && html`<p class="muted">Loading…</p>`}
    ${page && jobs.length === 0 && html`<p class="muted jobs-empty">No ${status || ""} jobs${cursors.length > 1 ? " on this page" : ""}.</p>`}
    ${jobs.length > 0 && html`<table class="jobs">
      <thead><tr><th>Job</th><th>Status</th><th>Mode</th><th>Age</th><th>Duration</th><th>Capture</th><th>Run</th><th>Steps</th></tr></thead>
      <tbody>${jobs.map((job) => html`<tr key=${job.job_id} data-job=${job.job_id} class=${`job-row status-row-${job.status}`}>
        <td class="mono"><a href=${`#/jobs/${enc(job.job_id)}`} title=${job.job_id}>${job.job_id.slice(0, 8)}</a></td>
        <td><${Status} status=${job.status} /></td>
        <td>${job.mode}</td>
        <td title=${job.created_at}>${span(now - ms(job.created_at))}</td>
        <td>${duration(job, now)}</td>
        <td>${job.capture || ""}</td>
        <td class="mono">${job.run_id ? html`<a href=${`#/runs/${enc(job.run_id)}`} title=${job.run_id}>${job.run_id.slice(0, 8)}</a>` : ""}</td>
        <td>${(job.steps || []).filter((s) => s.status === "completed").length} / ${(job.steps || []).length}</td>
      </tr>`)}</tbody>
    </table>`}
    <div class="jobs-pager">
      ${cursors.length > 1 && html`<button class="newest" onClick=${() => setCursors([null])}>Newest</button>`}
      ${cursors.length > 1 && html`<button class="newer" onClick=${() => setCursors(cursors.slice(0, -1))}>Newer</button>`}
      ${page && page.next && html`<button class="older" onClick=${() => setCursors([...cursors, page.next])}>Older</button>`}
    </div>`;
}

// -- one job ------------------------------------------------------------------------------------

// A progress report (whatever the step passed to get_context().emit) as a fraction 0..1, or
// null when it is not one: a number (0..1, or a percentage), {done, of|total}, {current, total},
// {fraction|ratio|progress}, {percent}.
export function fraction(p) {
  const ratio = (x) => (x <= 1 ? x : x / 100);
  if (typeof p === "number") return Number.isFinite(p) && p >= 0 ? Math.min(1, ratio(p)) : null;
  if (!p || typeof p !== "object") return null;
  const done = [p.done, p.current, p.completed, p.n].find((x) => typeof x === "number");
  const of = [p.of, p.total, p.count].find((x) => typeof x === "number");
  if (done !== undefined && of !== undefined && of > 0) return Math.max(0, Math.min(1, done / of));
  for (const k of ["fraction", "ratio", "progress"]) {
    if (typeof p[k] === "number") return Math.max(0, Math.min(1, ratio(p[k])));
  }
  if (typeof p.percent === "number") return Math.max(0, Math.min(1, p.percent / 100));
  return null;
}

const text = (x) => (typeof x === "string" ? x : JSON.stringify(x));
const stepError = (e) => (e && typeof e === "object" && (e.type || e.message)
  ? [e.type, e.message].filter(Boolean).join(": ") : text(e));

function progressLabel(p) {
  if (p && typeof p === "object") {
    const done = p.done ?? p.current ?? p.completed;
    const of = p.of ?? p.total ?? p.count;
    if (done !== undefined && of !== undefined) {
      const rest = Object.keys(p).filter((k) => !["done", "current", "completed", "of", "total", "count"].includes(k));
      return `${done} / ${of}${rest.length ? " " + JSON.stringify(Object.fromEntries(rest.map((k) => [k, p[k]]))) : ""}`;
    }
  }
  return text(p);
}

// What the events so far say, folded in seq order; each seq is taken once.
function fresh() {
  return { seen: new Set(), last: 0, status: null, steps: new Map(), order: [], outputs: undefined,
    error: null, runId: null, executionMs: null, count: 0 };
}

function stepOf(state, name) {
  if (!state.steps.has(name)) {
    state.steps.set(name, { status: "pending", duration_ms: null, chunks: [], progress: null, error: null });
    state.order.push(name);
  }
  return state.steps.get(name);
}

function fold(state, event) {
  if (state.seen.has(event.seq)) return false; // never twice, whatever the stream replays
  state.seen.add(event.seq);
  state.last = Math.max(state.last, event.seq);
  state.count += 1;
  const data = event;
  switch (event.event) {
    case "job.queued": state.status = "queued"; break;
    case "job.started": state.status = "running"; break;
    case "step.started": stepOf(state, data.step).status = "running"; break;
    case "step.chunk": stepOf(state, data.step).chunks.push({ seq: event.seq, chunk: data.chunk }); break;
    case "step.progress": stepOf(state, data.step).progress = { seq: event.seq, data: data.progress }; break;
    case "step.completed": {
      const step = stepOf(state, data.step);
      step.status = "completed";
      step.duration_ms = data.duration_ms ?? null;
      break;
    }
    case "step.failed": {
      const step = stepOf(state, data.step);
      step.status = "failed";
      step.duration_ms = data.duration_ms ?? null;
      step.error = data.error ?? data.message ?? null;
      break;
    }
    case "job.completed":
      state.status = "completed";
      state.outputs = data.outputs;
      state.runId = data.run_id ?? null;
      state.executionMs = data.execution_time_ms ?? null;
      break;
    case "job.failed":
      state.status = "failed";
      state.error = data.error ?? null;
      state.runId = data.run_id ?? null;
      break;
    case "job.cancelled": state.status = "cancelled"; break;
    default: break;
  }
  return true;
}

function Step({ name, known, folded, jobStatus }) {
  // the events are the truth once they speak of this step; before, GET /jobs/{id}
  const status = folded && folded.status !== "pending" ? folded.status : known?.status || "pending";
  const shown = TERMINAL.has(jobStatus) && status === "running" && jobStatus !== "completed" ? jobStatus : status;
  const took = folded?.duration_ms ?? known?.duration_ms;
  const chunks = folded ? folded.chunks : [];
  const progress = folded?.progress;
  const f = progress ? fraction(progress.data) : null;
  return html`<li class=${`step step-${shown}`} data-step=${name} data-status=${shown}>
    <div class="step-head">
      <span class="step-dot"></span>
      <span class="step-name">${name}</span>
      <span class="status-text">${shown}</span>
      ${took != null && html`<span class="muted step-took">${span(took)}</span>`}
      ${chunks.length > 0 && html`<span class="muted chunk-count" data-count=${chunks.length}>${chunks.length} chunk${chunks.length === 1 ? "" : "s"}</span>`}
    </div>
    ${progress && html`<div class="step-progress" data-seq=${progress.seq}>
      ${f !== null && html`<progress max="1" value=${f}></progress>`}
      <span class="mono">${progressLabel(progress.data)}</span>
    </div>`}
    ${chunks.length > 0 && html`<div class="chunks mono">${chunks.map((c) => html`<span class="chunk" key=${c.seq} data-seq=${c.seq}>${text(c.chunk)}</span> `)}</div>`}
    ${folded?.error && html`<pre class="error step-error">${stepError(folded.error)}</pre>`}
  </li>`;
}

export function Job({ id }) {
  const [job, setJob] = useState(null);
  const [problem, setProblem] = useState(null);
  const [, setTick] = useState(0);
  const [following, setFollowing] = useState(false);
  const [cancelNote, setCancelNote] = useState(null);
  const [cancelling, setCancelling] = useState(false);
  const state = useRef(fresh());
  const path = `/jobs/${enc(id)}`;

  const load = () => api(path).then((j) => { setJob(j); setProblem(null); return j; });

  // the job as stored, then its events live
  useEffect(() => {
    state.current = fresh();
    setJob(null);
    setProblem(null);
    setCancelNote(null);
    let live = true;
    let stop = () => {};
    let watchdog = null;
    let poller = null;
    // at most one render a frame, however fast the events come (a token stream)
    let frame = null;
    const redraw = () => {
      if (frame === null) {
        frame = requestAnimationFrame(() => {
          frame = null;
          if (live) setTick((t) => t + 1);
        });
      }
    };
    // without a stream: GET /jobs/{id} again until the job ends
    const poll = () => {
      poller = setTimeout(() => load().then((j) => {
        if (live && !TERMINAL.has(j.status)) poll();
      }, () => live && poll()), REFRESH_MS);
    };
    load().then((j) => {
      if (!live) return;
      // a sync invoke's events go to its caller (kept, if streamed, on its worker only): its
      // page shows the job's state, polled
      if (j.mode === "sync") {
        if (!TERMINAL.has(j.status)) poll();
        return;
      }
      if (!live) return;
      setFollowing(true);
      stop = follow(id, (event) => {
        if (live && fold(state.current, event)) redraw();
      }, () => {
        if (!live) return;
        setFollowing(false);
        load().catch(() => {});
      });
      if (TERMINAL.has(j.status)) {
        // an ended job whose events are gone: stop asking
        watchdog = setTimeout(() => {
          if (live && state.current.count === 0) {
            stop();
            setFollowing(false);
          }
        }, 5000);
      }
    }, (e) => live && setProblem(e));
    return () => {
      live = false;
      stop();
      clearTimeout(watchdog);
      clearTimeout(poller);
      if (frame !== null) cancelAnimationFrame(frame);
    };
  }, [id]);

  if (problem) {
    return html`<h1>Job <span class="mono">${id}</span></h1>
      <p class="error" role="alert">${problem.status === 404 ? "No such job (unknown, or forgotten after ZSERVE_JOB_TTL_S)." : problem.message}</p>
      <p><a href="#/jobs">All jobs</a></p>`;
  }
  if (!job) return html`<h1>Job <span class="mono">${id}</span></h1><p class="muted">Loading…</p>`;

  const s = state.current;
  const status = s.status && TERMINAL.has(s.status) ? s.status
    : TERMINAL.has(job.status) ? job.status : s.status || job.status;
  const known = new Map((job.steps || []).map((step) => [step.name, step]));
  const names = [...known.keys(), ...s.order.filter((n) => !known.has(n))];
  const outputs = s.outputs !== undefined ? s.outputs : job.outputs;
  const error = s.error || job.error;
  const runId = s.runId || job.run_id;

  const cancel = async () => {
    setCancelling(true);
    try {
      const answer = await api(`${path}/cancel`, { method: "POST" });
      setCancelNote(`Cancel asked: ${answer.status}`);
    } catch (e) {
      setCancelNote(e.status === 409 ? "The job had already finished." : e.message);
    }
    setCancelling(false);
    load().catch(() => {});
  };

  return html`<h1>Job <span class="mono">${id}</span> <${Status} status=${status} /></h1>
    <div class="job-bar">
      ${!TERMINAL.has(status) && html`<button class="cancel" disabled=${cancelling} onClick=${cancel}>Cancel</button>`}
      ${following ? html`<span class="muted live">● live</span>` : ""}
      ${cancelNote && html`<span class="muted cancel-note">${cancelNote}</span>`}
      <a href="#/jobs">All jobs</a>
    </div>
    <dl class="job-facts">
      <dt>Mode</dt><dd>${job.mode}</dd>
      <dt>Capture</dt><dd>${job.capture || ""}</dd>
      <dt>Created</dt><dd>${job.created_at || ""}</dd>
      <dt>Started</dt><dd>${job.started_at || ""}</dd>
      <dt>Finished</dt><dd>${job.finished_at || ""}</dd>
      <dt>Duration</dt><dd>${s.executionMs != null ? span(s.executionMs) : duration(job, Date.now())}</dd>
      ${runId && html`<dt>Run</dt><dd class="mono"><a href=${`#/runs/${enc(runId)}`}>${runId}</a></dd>`}
      ${job.worker && html`<dt>Worker</dt><dd class="mono">${job.worker}</dd>`}
      <dt>Events</dt><dd class="event-count" data-count=${s.count}>${s.count}${s.last ? ` (last #${s.last})` : ""}</dd>
    </dl>
    <h2>Steps</h2>
    <ol class="steps">${names.map((name) => html`<${Step} key=${name} name=${name} known=${known.get(name)}
      folded=${s.steps.get(name)} jobStatus=${status} />`)}</ol>
    ${outputs !== undefined && outputs !== null && html`<h2>Outputs</h2><pre class="outputs">${JSON.stringify(outputs, null, 2)}</pre>`}
    ${error && html`<h2>Error</h2><div class="job-error error">
      <p><strong>${error.reason || "failed"}</strong>${error.step ? html` in step <span class="mono">${error.step}</span>` : ""}</p>
      ${error.message && html`<pre>${error.message}</pre>`}
    </div>`}`;
}
