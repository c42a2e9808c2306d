// Tracked runs: a list from GET /runs (filtered by status and capture, one page of 50 at a time,
// `next` for the following one) and a run's page from GET /runs/{id}: its steps as a timeline
// (start offset and duration as bars placed by percentage; parallel branches overlap as their
// offsets say), its parameters, metadata and outputs as captured (redacted values stay as the
// server gives them), a failed step's error, and downloads of its artifacts.
import { html, useEffect, useState } from "../vendor/htm-preact.module.js";
import { api, download } from "../api.js";

const LIMIT = 50;
const STATUSES = ["", "running", "completed", "failed", "cancelled"];
const CAPTURES = ["", "metadata", "sampled", "full", "errors_only"];

export function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${value.toFixed(3)} ms`;
  if (value < 1000) return `${value.toFixed(1)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  return q.toString();
}

export function Runs() {
  const [status, setStatus] = useState("");
  const [capture, setCapture] = useState("");
  const [cursors, setCursors] = useState([""]); // the cursor of each page seen, for "previous"
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const cursor = cursors[cursors.length - 1];

  useEffect(() => {
    let live = true;
    setError(null);
    api(`/runs?${query({ status, capture, limit: LIMIT, cursor })}`)
      .then((doc) => live && setPage(doc))
      .catch((e) => live && setError(e));
    return () => { live = false; };
  }, [status, capture, cursor]);

  const filter = (set) => (e) => {
    set(e.target.value);
    setCursors([""]);
  };
  const select = (name, value, options, set) => html`<label>${name}
    <select name=${name.toLowerCase()} value=${value} onChange=${filter(set)}>
      ${options.map((o) => html`<option value=${o}>${o || "any"}</option>`)}
    </select></label>`;

  let body;
  if (error) {
    body = error.status === 404 || error.status === 503
      ? html`<p class="muted">${error.message} (runs are recorded in tracked mode: a store and a capture mode other than <code>none</code>).</p>`
      : html`<p class="error" role="alert">${error.message}</p>`;
  } else if (!page) {
    body = html`<p class="muted">Loading…</p>`;
  } else if (!page.runs.length) {
    body = status || capture
      ? html`<p class="muted runs-empty">No runs match.</p>`
      : html`<p class="muted runs-empty">No runs recorded yet: a run is recorded when its capture mode is not <code>none</code> (<code>ZSERVE_CAPTURE_DEFAULT=metadata</code>, or a capture chosen on Try it).</p>`;
  } else {
    body = html`<table class="runs-table">
      <thead><tr><th>Run</th><th>Status</th><th>Capture</th><th>Started</th><th>Duration</th><th>Steps</th><th>Job</th></tr></thead>
      <tbody>${page.runs.map((r) => html`<tr key=${r.run_id}>
        <td><a class="mono" href=${`#/runs/${encodeURIComponent(r.run_id)}`}>${r.run_id}</a></td>
        <td class=${`status-${r.status}`}>${r.status}</td>
        <td>${r.capture}</td>
        <td>${when(r.started_at)}</td>
        <td>${ms(r.duration_ms)}</td>
        <td>${(r.steps || []).length}</td>
        <td>${r.job_id ? html`<a class="mono" href=${`#/jobs/${encodeURIComponent(r.job_id)}`}>${r.job_id.slice(0, 8)}</a>` : "–"}</td>
      </tr>`)}</tbody>
    </table>`;
  }
  return html`<h1>Runs</h1>
    <div class="runs-filters">
      ${select("Status", status, STATUSES, setStatus)}
      ${select("Capture", capture, CAPTURES, setCapture)}
    </div>
    ${body}
    <div class="runs-pager">
      <button disabled=${cursors.length < 2} onClick=${() => setCursors(cursors.slice(0, -1))}>← Newer</button>
      <span class="muted">page ${cursors.length}</span>
      <button disabled=${!page || !page.next} onClick=${() => setCursors([...cursors, page.next])}>Older →</button>
    </div>`;
}

// Each step's offset from the run's start and its share of the run's span, in percent.
export function timeline(run) {
  const start = Date.parse(run.started_at);
  const rows = run.steps.map((s) => {
    const offset = s.started_at ? Date.parse(s.started_at) - start : null;
    return { step: s, offset, duration: s.duration_ms ?? null };
  });
  const ends = rows.map((r) => (r.offset ?? 0) + (r.duration ?? 0));
  const total = Math.max(run.duration_ms || 0, ...ends, 0.001);
  return rows.map((r) => ({
    ...r,
    left: r.offset === null ? 0 : Math.min(100, Math.max(0, (r.offset / total) * 100)),
    width: r.duration === null ? 0 : Math.max(0.4, (r.duration / total) * 100),
    total,
  }));
}

function Bar({ left, width, status }) {
  // percentages from the run's own figures: set as style properties (CSP allows those)
  const ref = (el) => {
    if (!el) return;
    el.style.left = `${left}%`;
    el.style.width = `${Math.min(width, 100 - left)}%`;
  };
  return html`<div class="run-track"><div ref=${ref} class=${`run-bar run-bar-${status}`}></div></div>`;
}

function Value({ value }) {
  return html`<pre class="run-value">${JSON.stringify(value, null, 2)}</pre>`;
}

function extension(type) {
  if (!type) return "bin";
  if (type.includes("json")) return "json";
  if (type.startsWith("text/csv")) return "csv";
  if (type.startsWith("text/")) return "txt";
  if (type.includes("pickle")) return "pkl";
  return "bin";
}

function Outputs({ runId, step }) {
  const [problem, setProblem] = useState(null);
  const outputs = Object.entries(step.outputs || {});
  if (!outputs.length) {
    return step.output_size !== undefined
      ? html`<span class="muted">${step.output_size} ${step.output_size === 1 ? "byte" : "bytes"} (not captured)</span>`
      : html`<span class="muted">–</span>`;
  }
  return html`<div class="run-outputs">${outputs.map(([name, a]) => {
    const path = `/runs/${encodeURIComponent(runId)}/artifacts/${encodeURIComponent(a.artifact_id)}`;
    const file = `${step.name}.${name}.${extension(a.content_type)}`;
    const get = (e) => {
      e.preventDefault();
      setProblem(null);
      download(path, file).catch((err) => setProblem(err.message));
    };
    return html`<div class="run-output" key=${name}>
      <div><strong>${name}</strong> <span class="muted">${a.content_type || ""} · ${a.size ?? "?"} bytes</span>
        ${a.artifact_id && html` <a href="#" class="run-download" data-artifact=${a.artifact_id} onClick=${get}>Download</a>`}</div>
      ${"value" in a ? html`<${Value} value=${a.value} />` : html`<span class="muted">(value not shown: download it)</span>`}
    </div>`;
  })}${problem && html`<p class="error" role="alert">${problem}</p>`}</div>`;
}

export function Run({ id }) {
  const [run, setRun] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    let live = true;
    setRun(null);
    setError(null);
    api(`/runs/${encodeURIComponent(id)}`)
      .then((doc) => live && setRun(doc))
      .catch((e) => live && setError(e));
    return () => { live = false; };
  }, [id]);

  if (error) return html`<h1>Run <span class="mono">${id}</span></h1><p class="error" role="alert">${error.message}</p>`;
  if (!run) return html`<h1>Run <span class="mono">${id}</span></h1><p class="muted">Loading…</p>`;
  const rows = timeline(run);
  const failed = run.steps.filter((s) => s.error);
  return html`<h1>Run <span class="mono">${run.run_id}</span></h1>
    <div class="cards run-summary">
      <div class="card"><div class="muted">Status</div><strong class=${`status-${run.status}`}>${run.status}</strong></div>
      <div class="card"><div class="muted">Duration</div><strong>${ms(run.duration_ms)}</strong></div>
      <div class="card"><div class="muted">Started</div>${when(run.started_at)}</div>
      <div class="card"><div class="muted">Capture · pipeline</div>${run.capture} · ${run.pipeline}</div>
      <div class="card"><div class="muted">Job</div>${run.job_id
        ? html`<a class="mono" href=${`#/jobs/${encodeURIComponent(run.job_id)}`}>${run.job_id}</a>` : "–"}</div>
    </div>
    ${run.error && html`<div class="card run-error" role="alert">
      <strong class="error">${run.error.type}</strong>${run.error.step ? html` in step <strong>${run.error.step}</strong>` : ""}: ${run.error.message}
    </div>`}
    <h2>Timeline</h2>
    <table class="run-timeline">
      <thead><tr><th>Step</th><th>Status</th><th>Start</th><th>Duration</th><th class="run-track-head">0 – ${ms(rows[0]?.total ?? run.duration_ms)}</th></tr></thead>
      <tbody>${rows.map(({ step, offset, duration, left, width }) => html`<tr key=${step.name} class=${`run-step run-step-${step.status}`} data-step=${step.name}>
        <td class="mono">${step.name}</td>
        <td class=${`status-${step.status}`}>${step.status}</td>
        <td>${offset === null ? "–" : `+${ms(offset)}`}</td>
        <td>${ms(duration)}</td>
        <td><${Bar} left=${left} width=${width} status=${step.status} /></td>
      </tr>`)}</tbody>
    </table>
    ${failed.map((s) => html`<div class="card run-step-error" key=${s.name}>
      Step <strong class="mono">${s.name}</strong> failed: <strong class="error">${s.error.type}</strong>: <span class="run-step-message">${s.error.message}</span>
    </div>`)}
    <h2>Parameters</h2>
    ${"parameters" in run ? html`<${Value} value=${run.parameters} />` : html`<p class="muted">Not captured (capture ${run.capture}).</p>`}
    <h2>Metadata</h2>
    ${"metadata" in run ? html`<${Value} value=${run.metadata} />` : html`<p class="muted">None captured (capture ${run.capture}).</p>`}
    <h2>Outputs</h2>
    <table class="run-step-outputs">
      <thead><tr><th>Step</th><th>Outputs</th></tr></thead>
      <tbody>${run.steps.map((s) => html`<tr key=${s.name}><td class="mono">${s.name}</td><td><${Outputs} runId=${run.run_id} step=${s} /></td></tr>`)}</tbody>
    </table>`;
}
