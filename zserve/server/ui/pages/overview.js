import { html } from "../vendor/htm-preact.module.js";

export function Overview() {
  return html`<h1>Overview</h1>`;
}
