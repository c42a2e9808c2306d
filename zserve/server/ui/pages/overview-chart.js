// A uPlot time chart as a Preact component: made once, given new data with setData, resized
// with its container. Colours come from the stylesheet's variables (canvas needs real colours).
import { html, useEffect, useRef } from "../vendor/htm-preact.module.js";
import uPlot from "../vendor/uPlot.esm.js";

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

// series: [{label, color: "--var" or colour, dash?}], data: [xs, ys1, ys2, ...]
export function TimeChart({ title, unit, series, data, height = 200, name }) {
  const box = useRef(null);
  const chart = useRef(null);

  useEffect(() => {
    const fg = cssVar("--muted", "#5b6678");
    const grid = cssVar("--line", "#dde2ea");
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const opts = {
      width: Math.max(200, box.current.clientWidth),
      height,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1)] } },
      axes: [axis, { ...axis, label: unit, size: 56 }],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color.startsWith("--") ? cssVar(s.color, "#2f6fde") : s.color,
          width: 1.5,
          dash: s.dash,
          spanGaps: false,
          value: (u, v) => (v === null || v === undefined ? "–" : `${+v.toFixed(2)} ${unit}`),
        })),
      ],
    };
    chart.current = new uPlot(opts, data, box.current);
    const resize = new ResizeObserver(() => {
      if (chart.current && box.current) {
        chart.current.setSize({ width: Math.max(200, box.current.clientWidth), height });
      }
    });
    resize.observe(box.current);
    return () => {
      resize.disconnect();
      chart.current.destroy();
      chart.current = null;
    };
  }, []);

  useEffect(() => {
    if (chart.current) chart.current.setData(data);
  }, [data]);

  const points = data[0].length;
  // each series' latest value, beside the title (the legend shows the cursor's)
  const latest = series.map((s, i) => {
    const ys = data[i + 1];
    for (let j = ys.length - 1; j >= 0; j--) if (ys[j] !== null && ys[j] !== undefined) return ys[j];
    return null;
  });
  const peak = Math.max(0, ...data[1].filter((v) => v !== null && v !== undefined));
  return html`<section class="card ov-chart" data-chart=${name} data-points=${points} data-peak=${peak}>
    <h2>${title}</h2>
    <div class="ov-latest muted">${series.map((s, i) => html`<span data-latest=${s.label}>${s.label} <strong>${latest[i] === null ? "–" : +latest[i].toFixed(2)}</strong></span> `)}</div>
    <div ref=${box} class="ov-plot"></div>
  </section>`;
}
