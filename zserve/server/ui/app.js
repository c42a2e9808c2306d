// The dashboard: a shell (header, navigation, login) and a page per route of the location's
// hash. Preact and htm (vendor/htm-preact.module.js) render it; no build step.
import { html, render, useEffect, useState } from "./vendor/htm-preact.module.js";
import { api, auth, keyNeeded } from "./api.js";
import { Overview } from "./pages/overview.js";
import { Jobs, Job } from "./pages/jobs.js";
import { Runs, Run } from "./pages/runs.js";
import { Try } from "./pages/try.js";

const ROUTES = [
  [/^#?\/?$/, () => html`<${Overview} />`, "overview"],
  [/^#\/jobs\/?$/, () => html`<${Jobs} />`, "jobs"],
  [/^#\/jobs\/([^/]+)$/, (m) => html`<${Job} id=${decodeURIComponent(m[1])} />`, "jobs"],
  [/^#\/runs\/?$/, () => html`<${Runs} />`, "runs"],
  [/^#\/runs\/([^/]+)$/, (m) => html`<${Run} id=${decodeURIComponent(m[1])} />`, "runs"],
  [/^#\/try\/?$/, () => html`<${Try} />`, "try"],
];

function route(hash) {
  for (const [pattern, page, section] of ROUTES) {
    const m = hash.match(pattern);
    if (m) return { page: page(m), section };
  }
  return { page: html`<p class="error">No such page: ${hash}</p>`, section: "" };
}

function Login({ refused }) {
  const [key, setKey] = useState("");
  const submit = (e) => {
    e.preventDefault();
    auth.set(key);
  };
  return html`<form class="login" onSubmit=${submit}>
    <h1>zserve</h1>
    <p>This server needs its auth key (<code>ZSERVE_AUTH_KEY</code>). It is kept in this tab only.</p>
    ${refused && html`<p class="error" role="alert">That key was refused.</p>`}
    <label>Auth key <input type="password" name="key" autocomplete="current-password"
      value=${key} onInput=${(e) => setKey(e.target.value)} autofocus /></label>
    <button type="submit">Sign in</button>
  </form>`;
}

function App() {
  const [hash, setHash] = useState(location.hash);
  const [needKey, setNeedKey] = useState(null); // null: not known yet
  const [refused, setRefused] = useState(false);
  const [info, setInfo] = useState(null);

  useEffect(() => {
    const onHash = () => setHash(location.hash);
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  useEffect(() => auth.onNeeded((needed) => {
    if (needed) {
      setRefused(Boolean(auth.key()));
      auth.forget();
      setNeedKey(true);
    } else {
      check();
    }
  }), []);
  const check = () => keyNeeded().then((needed) => {
    setRefused(needed && Boolean(auth.key()));
    if (needed) auth.forget();
    setNeedKey(needed);
    if (!needed) api("/info").then(setInfo).catch(() => {});
  });
  useEffect(() => { check(); }, []);

  if (needKey === null) return html`<p class="loading">Loading…</p>`;
  if (needKey) return html`<${Login} refused=${refused} />`;
  const { page, section } = route(hash);
  const link = (to, name, label) =>
    html`<a href=${to} class=${section === name ? "active" : ""}>${label}</a>`;
  return html`<header>
      <a class="brand" href="#/">zserve</a>
      <span class="pipeline">${info ? `${info.pipeline?.name || info.pipeline || ""} ${info.deployment?.name ? "· " + info.deployment.name + ":" + info.deployment.version : ""}` : ""}</span>
      <nav>
        ${link("#/", "overview", "Overview")} ${link("#/jobs", "jobs", "Jobs")}
        ${link("#/runs", "runs", "Runs")} ${link("#/try", "try", "Try it")}
      </nav>
      ${auth.key() && html`<button class="link" onClick=${() => { auth.forget(); setNeedKey(true); setRefused(false); }}>Sign out</button>`}
    </header>
    <main>${page}</main>`;
}

render(html`<${App} />`, document.getElementById("app"));
