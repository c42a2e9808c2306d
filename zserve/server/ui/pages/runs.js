import { html } from "../vendor/htm-preact.module.js";

export function Runs() {
  return html`<h1>Runs</h1>`;
}

export function Run({ id }) {
  return html`<h1>Run ${id}</h1>`;
}
