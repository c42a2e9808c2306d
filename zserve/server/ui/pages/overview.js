// Overview: what this server serves (the deployment and its parameters), how it is set up
// (/status), and live charts of requests/s, errors/s and latency percentiles from /metrics,
// sampled every few seconds while the tab is visible.
import { html, useEffect, useMemo, useRef, useState } from "../vendor/htm-preact.module.js";
import { api } from "../api.js";
import { TimeChart } from "./overview-chart.js";
import { ERROR_STATUSES, POLL_MS, Series, WINDOW_S } from "./overview-series.js";

const STATUS_ORDER = ["queued", "running", "completed", "failed", "cancelled"];

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  let s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m ${s}s`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// A JSON schema's type as people read it: "string", "integer | null", "one of a, b", "array of number"
function typeOf(schema, defs) {
  if (!schema || typeof schema !== "object") return "any";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    const target = defs?.[name];
    return target && target.enum ? typeOf(target, defs) : name;
  }
  if (schema.enum) return `one of ${schema.enum.map((v) => JSON.stringify(v)).join(", ")}`;
  if ("const" in schema) return JSON.stringify(schema.const);
  const alts = schema.anyOf || schema.oneOf;
  if (alts) return alts.map((s) => typeOf(s, defs)).join(" | ");
  if (Array.isArray(schema.type)) return schema.type.join(" | ");
  if (schema.type === "array") return `array of ${typeOf(schema.items, defs)}`;
  if (schema.type === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object") {
    return `object of ${typeOf(schema.additionalProperties, defs)}`;
  }
  return schema.type || "any";
}

function limits(schema) {
  const found = [];
  for (const [key, label] of [["minimum", "≥"], ["exclusiveMinimum", ">"], ["maximum", "≤"],
    ["exclusiveMaximum", "<"], ["minLength", "length ≥"], ["maxLength", "length ≤"],
    ["pattern", "matches"], ["minItems", "items ≥"], ["maxItems", "items ≤"]]) {
    if (key in schema) found.push(`${label} ${schema[key]}`);
  }
  return found.join(", ");
}

function Parameters({ schema }) {
  if (!schema || !schema.properties || !Object.keys(schema.properties).length) {
    return html`<p class="muted">No parameters.</p>`;
  }
  const required = new Set(schema.required || []);
  const defs = schema.$defs || schema.definitions;
  return html`<table class="ov-params">
    <thead><tr><th>Parameter</th><th>Type</th><th>Required</th><th>Default</th><th>Description</th></tr></thead>
    <tbody>
      ${Object.entries(schema.properties).map(([name, p]) => html`<tr data-param=${name}>
        <td class="mono">${name}</td>
        <td class="mono">${typeOf(p, defs)}${limits(p) && html`<span class="muted"> (${limits(p)})</span>`}</td>
        <td>${required.has(name) ? "yes" : "no"}</td>
        <td class="mono">${"default" in p ? JSON.stringify(p.default) : ""}</td>
        <td>${p.description || (p.title && p.title.toLowerCase() !== name.replace(/_/g, " ").toLowerCase() ? p.title : "")}</td>
      </tr>`)}
    </tbody>
  </table>
  <details class="ov-schema"><summary>JSON schema</summary><pre>${JSON.stringify(schema, null, 2)}</pre></details>`;
}

function Row({ label, children, name }) {
  return html`<tr data-field=${name}><th>${label}</th><td>${children}</td></tr>`;
}

function Deployment({ info }) {
  const d = info.deployment || {};
  return html`<section class="card ov-deployment">
    <h2>Deployment</h2>
    <table class="ov-fields"><tbody>
      <${Row} label="Name" name="name"><strong>${d.name}</strong><//>
      <${Row} label="Version" name="version">${d.version}<//>
      <${Row} label="Id" name="id"><span class="mono">${d.id}</span><//>
      <${Row} label="Source" name="source"><span class="mono">${d.source}</span><//>
      <${Row} label="Created" name="created">${d.created_at ? new Date(d.created_at).toLocaleString() : "–"}<//>
      <${Row} label="Pipeline" name="pipeline">${info.pipeline} <span class="muted">(${(info.steps || []).length} steps, ${info.execution})</span><//>
    </tbody></table>
  </section>`;
}

function Server({ status, uptime }) {
  const c = status.capture || {};
  return html`<section class="card ov-server">
    <h2>Server</h2>
    <table class="ov-fields"><tbody>
      <${Row} label="Host id" name="host_id"><span class="mono">${status.host_id}</span><//>
      <${Row} label="Listening" name="listen"><span class="mono">${status.host}:${status.port}</span><//>
      <${Row} label="Workers" name="workers">${status.workers}<//>
      <${Row} label="Capture" name="capture">default <strong>${status.capture_default}</strong>, ceiling <strong>${c.max}</strong>${c.sample_rate !== undefined ? html` <span class="muted">(sampled: ${c.sample_rate})</span>` : ""}<//>
      <${Row} label="Store" name="store">${status.store?.kind}${status.store && !status.store.reachable ? html` <span class="error">unreachable</span>` : ""}<//>
      <${Row} label="Broker" name="broker">${status.broker?.kind}${status.broker && !status.broker.reachable ? html` <span class="error">unreachable</span>` : ""}<//>
      <${Row} label="Uptime" name="uptime"><span class="ov-uptime">${duration(uptime)}</span> <span class="muted">since ${status.started_at ? new Date(status.started_at).toLocaleString() : "–"}</span><//>
      <${Row} label="zserve" name="version">${status.version}<//>
    </tbody></table>
  </section>`;
}

function Totals({ metrics, windowRequests }) {
  const inv = metrics?.invocations || { total: 0, by_status: {} };
  const errors = ERROR_STATUSES.reduce((sum, s) => sum + (inv.by_status?.[s] || 0), 0);
  const jobs = metrics?.jobs?.by_status || {};
  const statuses = [...STATUS_ORDER.filter((s) => s in jobs), ...Object.keys(jobs).filter((s) => !STATUS_ORDER.includes(s))];
  const lat = metrics?.latency_ms || {};
  return html`<div class="cards ov-totals">
    <section class="card">
      <h2>Requests</h2>
      <div class="ov-big" data-total=${inv.total}>${inv.total}</div>
      <div class="muted"><span data-window=${windowRequests}>${windowRequests}</span> in the last ${WINDOW_S / 60} minutes · <span class=${errors ? "error" : ""} data-errors=${errors}>${errors} errors</span></div>
      <div class="muted">since start: p50 ≤ ${lat.p50 ?? "–"} ms, p95 ≤ ${lat.p95 ?? "–"} ms, p99 ≤ ${lat.p99 ?? "–"} ms</div>
    </section>
    <section class="card ov-jobs">
      <h2>Jobs by status</h2>
      ${statuses.length
        ? html`<ul class="ov-statuses">${statuses.map((s) => html`<li data-status=${s}><span class=${`status-${s}`}>${s}</span> <strong>${jobs[s]}</strong></li>`)}</ul>`
        : html`<p class="muted">No jobs yet.</p>`}
      ${metrics?.jobs?.note && html`<p class="muted ov-note">${metrics.jobs.note}</p>`}
    </section>
  </div>`;
}

// GET /metrics every POLL_MS while the tab is visible; a hidden tab asks nothing.
function useMetrics() {
  const series = useRef(new Series());
  const [state, setState] = useState({ metrics: null, version: 0, error: null });
  useEffect(() => {
    let timer = null;
    let stopped = false;
    const tick = async () => {
      timer = null;
      if (stopped || document.hidden) return;
      try {
        const doc = await api("/metrics");
        if (stopped) return;
        series.current.add(doc, Date.now() / 1000);
        setState((s) => ({ metrics: doc, version: s.version + 1, error: null }));
      } catch (e) {
        if (stopped) return;
        series.current.pause();
        setState((s) => ({ ...s, error: e.message }));
      }
      if (!stopped && !document.hidden) timer = setTimeout(tick, POLL_MS);
    };
    const onVisibility = () => {
      if (document.hidden) {
        if (timer) clearTimeout(timer);
        timer = null;
        series.current.pause();
      } else if (!timer) {
        tick();
      }
    };
    document.addEventListener("visibilitychange", onVisibility);
    tick();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisibility);
    };
  }, []);
  return { ...state, series: series.current };
}

export function Overview() {
  const [info, setInfo] = useState(null);
  const [status, setStatus] = useState(null);
  const [fetchedAt, setFetchedAt] = useState(0);
  const [error, setError] = useState(null);
  const { metrics, version, error: metricsError, series } = useMetrics();

  useEffect(() => {
    api("/info").then(setInfo).catch((e) => setError(e.message));
    api("/status").then((s) => { setStatus(s); setFetchedAt(Date.now()); }).catch((e) => setError(e.message));
  }, []);

  const rates = useMemo(() => [series.t.slice(), series.rps.slice(), series.eps.slice()], [version]);
  const latency = useMemo(() => [series.t.slice(), series.p50.slice(), series.p95.slice(), series.p99.slice()], [version]);
  const uptime = status && status.uptime_s !== undefined ? status.uptime_s + (Date.now() - fetchedAt) / 1000 : null;

  return html`<div class="overview">
    <h1>Overview</h1>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <div class="cards">
      ${info ? html`<${Deployment} info=${info} />` : html`<section class="card muted">Loading the deployment…</section>`}
      ${status ? html`<${Server} status=${status} uptime=${uptime} />` : html`<section class="card muted">Loading the server…</section>`}
    </div>
    <${Totals} metrics=${metrics} windowRequests=${series.requests()} />
    ${metricsError && html`<p class="error">Metrics: ${metricsError}</p>`}
    <div class="ov-charts">
      <${TimeChart} name="rates" title="Requests/s and errors/s" unit="/s" data=${rates}
        series=${[{ label: "requests/s", color: "--accent" }, { label: "errors/s", color: "--bad" }]} />
      <${TimeChart} name="latency" title="Latency percentiles (ms, between samples)" unit="ms" data=${latency}
        series=${[{ label: "p50", color: "--ok" }, { label: "p95", color: "--warn" }, { label: "p99", color: "--bad" }]} />
    </div>
    <p class="muted ov-note">Sampled from <code>/metrics</code> every ${POLL_MS / 1000} s while this tab is visible; the last ${WINDOW_S / 60} minutes. Errors: ${ERROR_STATUSES.join(", ")}. Percentiles are histogram bucket upper bounds.</p>
    <h2>Parameters</h2>
    ${info ? html`<${Parameters} schema=${info.parameters_json_schema} />` : ""}
  </div>`;
}
