import { html } from "../vendor/htm-preact.module.js";

export function Jobs() {
  return html`<h1>Jobs</h1>`;
}

export function Job({ id }) {
  return html`<h1>Job ${id}</h1>`;
}
