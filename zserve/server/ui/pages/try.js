import { html } from "../vendor/htm-preact.module.js";

export function Try() {
  return html`<h1>Try it</h1>`;
}
