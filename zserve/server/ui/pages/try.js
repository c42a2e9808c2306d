// Try it: a form made from the pipeline's parameter JSON schema (GET /info) that invokes it, sync
// (POST /invoke: the outputs, or the problem the server answered) or async (POST
// /invoke?mode=async: then the job's page follows it). Strings, numbers, integers, booleans and
// enums get their own inputs; anything else is a JSON textarea. What the user typed is sent as
// typed when it does not convert, so the server's validation has the last word.
import { html, useEffect, useState } from "../vendor/htm-preact.module.js";
import { api } from "../api.js";

const CAPTURES = ["", "none", "metadata", "full", "errors_only"];

// The field a schema property becomes: {kind, nullable, options?}.
export function fieldOf(prop, defs = {}) {
  let p = prop || {};
  if (p.$ref) p = { ...defs[p.$ref.split("/").pop()], ...p };
  let nullable = false;
  const alts = p.anyOf || p.oneOf;
  if (alts) {
    const real = alts.filter((a) => a.type !== "null");
    nullable = real.length < alts.length;
    if (real.length !== 1) return { kind: "json", nullable };
    p = { ...real[0], default: p.default, title: p.title, description: p.description };
    if (p.$ref) p = { ...defs[p.$ref.split("/").pop()], ...p };
  }
  if (Array.isArray(p.enum)) return { kind: "enum", nullable, options: p.enum };
  if ("const" in p) return { kind: "enum", nullable, options: [p.const] };
  if (["string", "number", "integer", "boolean"].includes(p.type)) return { kind: p.type, nullable };
  return { kind: "json", nullable };
}

function initial(field, prop) {
  const d = prop.default;
  if (field.kind === "boolean") return d === true;
  if (field.kind === "enum") return d === undefined ? "" : String(field.options.findIndex((o) => o === d));
  if (d === undefined || d === null) return "";
  if (field.kind === "json") return JSON.stringify(d, null, 2);
  return String(d);
}

// The value to send for a field, or undefined to leave it out (the server's default applies).
function convert(field, raw, name) {
  if (field.kind === "boolean") return raw;
  if (field.kind === "enum") return raw === "" ? undefined : field.options[Number(raw)];
  if (raw === "") return field.nullable ? null : field.kind === "string" ? "" : undefined;
  if (field.kind === "number" || field.kind === "integer") {
    const n = Number(raw);
    return raw.trim() !== "" && Number.isFinite(n) ? n : raw;
  }
  if (field.kind === "json") {
    try {
      return JSON.parse(raw);
    } catch (e) {
      throw new Error(`${name}: not valid JSON (${e.message})`);
    }
  }
  return raw;
}

function Problem({ error }) {
  const p = typeof error.problem === "object" && error.problem ? error.problem : null;
  return html`<div class="card try-problem" role="alert">
    <strong class="error">${p?.title || `HTTP ${error.status || ""}`}</strong>
    ${p?.status ? html` <span class="muted">(${p.status})</span>` : ""}
    <p class="try-detail">${p?.detail || error.message}</p>
    ${p?.errors && html`<ul>${p.errors.map((e) => html`<li><code>${(e.loc || []).join(".")}</code>: ${e.msg}</li>`)}</ul>`}
    ${p?.run_id && html`<p><a href=${`#/runs/${encodeURIComponent(p.run_id)}`}>The failed run</a></p>`}
  </div>`;
}

function Result({ answer }) {
  return html`<div class="card try-output">
    <p><strong class="status-completed">completed</strong> in ${answer.execution_time_ms} ms ·
      job <a class="mono" href=${`#/jobs/${encodeURIComponent(answer.job_id)}`}>${answer.job_id}</a>
      ${answer.run_id && html` · run <a class="mono" href=${`#/runs/${encodeURIComponent(answer.run_id)}`}>${answer.run_id}</a>`}
      ${" · capture "}${answer.capture}</p>
    <pre class="try-outputs">${JSON.stringify(answer.outputs, null, 2)}</pre>
  </div>`;
}

export function Try() {
  const [info, setInfo] = useState(null);
  const [loadError, setLoadError] = useState(null);
  const [values, setValues] = useState({});
  const [capture, setCapture] = useState("");
  const [busy, setBusy] = useState(false);
  const [answer, setAnswer] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    api("/info")
      .then((doc) => {
        setInfo(doc);
        const schema = doc.parameters_json_schema || {};
        const start = {};
        for (const [name, prop] of Object.entries(schema.properties || {})) {
          start[name] = initial(fieldOf(prop, schema.$defs), prop);
        }
        setValues(start);
      })
      .catch(setLoadError);
  }, []);

  if (loadError) return html`<h1>Try it</h1><p class="error" role="alert">${loadError.message}</p>`;
  if (!info) return html`<h1>Try it</h1><p class="muted">Loading…</p>`;
  const schema = info.parameters_json_schema || {};
  const props = Object.entries(schema.properties || {});
  const required = new Set(schema.required || []);
  const fields = props.map(([name, prop]) => [name, prop, fieldOf(prop, schema.$defs)]);
  const set = (name, value) => setValues({ ...values, [name]: value });

  const submit = async (mode) => {
    setAnswer(null);
    setError(null);
    let parameters;
    try {
      parameters = {};
      for (const [name, , field] of fields) {
        const v = convert(field, values[name], name);
        if (v !== undefined) parameters[name] = v;
      }
    } catch (e) {
      setError(e);
      return;
    }
    const body = { parameters };
    if (capture) body.capture_override = { mode: capture };
    setBusy(true);
    try {
      if (mode === "async") {
        const doc = await api("/invoke?mode=async", { method: "POST", body });
        location.hash = `#/jobs/${encodeURIComponent(doc.job_id)}`;
      } else {
        setAnswer(await api("/invoke", { method: "POST", body }));
      }
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  const input = (name, prop, field) => {
    const label = `${prop.title || name}${required.has(name) ? " *" : ""}`;
    const hint = prop.description ? html`<span class="muted">${prop.description}</span>` : "";
    const value = values[name];
    const onInput = (e) => set(name, e.target.value);
    if (field.kind === "boolean") {
      return html`<label class="try-check"><input type="checkbox" name=${name} checked=${value}
        onChange=${(e) => set(name, e.target.checked)} /> ${label} ${hint}</label>`;
    }
    if (field.kind === "enum") {
      return html`<label>${label} ${hint}<select name=${name} value=${value} onChange=${onInput}>
        <option value="">${required.has(name) ? "choose…" : "(default)"}</option>
        ${field.options.map((o, i) => html`<option value=${String(i)}>${typeof o === "string" ? o : JSON.stringify(o)}</option>`)}
      </select></label>`;
    }
    if (field.kind === "json") {
      return html`<label>${label} <span class="muted">(JSON)</span> ${hint}
        <textarea name=${name} value=${value} onInput=${onInput}></textarea></label>`;
    }
    const type = field.kind === "string" ? "text" : "number";
    return html`<label>${label} ${hint}<input type=${type} step=${field.kind === "integer" ? "1" : "any"}
      name=${name} value=${value} required=${required.has(name)} onInput=${onInput} /></label>`;
  };

  return html`<h1>Try it</h1>
    <p class="muted">Invoke <strong>${info.pipeline}</strong> with these parameters.</p>
    <form class="try-form" noValidate onSubmit=${(e) => { e.preventDefault(); submit("sync"); }}>
      ${fields.length ? fields.map(([name, prop, field]) => input(name, prop, field)) : html`<p class="muted">This pipeline takes no parameters.</p>`}
      <label>Capture <select name="capture" value=${capture} onChange=${(e) => setCapture(e.target.value)}>
        ${CAPTURES.map((c) => html`<option value=${c}>${c || `server default (${info.capture_default || "none"})`}</option>`)}
      </select></label>
      <div class="try-actions">
        <button type="submit" class="primary" disabled=${busy} name="sync">Invoke</button>
        <button type="button" disabled=${busy} name="async" onClick=${() => submit("async")}>Invoke async (follow the job)</button>
        ${busy && html`<span class="muted">Running…</span>`}
      </div>
    </form>
    <div class="try-result">
      ${error && html`<${Problem} error=${error} />`}
      ${answer && html`<${Result} answer=${answer} />`}
    </div>`;
}
