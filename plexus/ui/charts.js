// Charts: uPlot (vendor/, a global) for time series, plain CSS bars for per-group numbers.
import { h } from "./util.js";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// A time-series chart: xs (unix seconds), series [{label, values, color}]. Returns {el, destroy}.
export function timeChart(title, xs, series, { height = 220, bars = false } = {}) {
  const el = h("div", { class: "chart", role: "img", "aria-label": title });
  if (typeof uPlot === "undefined") { el.textContent = "chart library not loaded"; return { el, destroy() {} }; }
  const axis = { stroke: css("--muted"), grid: { stroke: css("--grid"), width: 1 }, ticks: { stroke: css("--grid") } };
  const width = () => Math.max(280, (el.parentElement ? el.parentElement.clientWidth : 600) - 8);
  const opts = {
    width: 600, height,
    scales: { x: { time: true } },
    axes: [axis, { ...axis, size: 56 }],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    series: [{}, ...series.map((s) => ({
      label: s.label, stroke: s.color, width: 2, fill: s.fill || undefined,
      paths: bars && uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined,
      points: { show: xs.length < 60 },
    }))],
  };
  const plot = new uPlot(opts, [xs, ...series.map((s) => s.values)], el);
  const resize = () => plot.setSize({ width: width(), height });
  const ro = new ResizeObserver(resize);
  requestAnimationFrame(() => { resize(); if (el.parentElement) ro.observe(el.parentElement); });
  return { el, destroy() { ro.disconnect(); plot.destroy(); } };
}

// Horizontal bars: rows [{label, values: [number|null...]}], series labels; each bar carries
// data-value (the number it draws) so it can be checked against the table under it.
export function barChart(title, rows, seriesLabels, fmt) {
  const max = seriesLabels.map((_, i) => Math.max(0, ...rows.map((r) => r.values[i] || 0)));
  return h("div", { class: "bars", role: "img", "aria-label": title },
    h("div", { class: "legend" }, seriesLabels.map((l, i) => h("span", { class: `sw s${i}` }, l))),
    rows.length ? rows.map((r) => h("div", { class: "bar-row" },
      h("span", { class: "bar-label", title: r.label }, r.label),
      h("span", { class: "bar-set" }, seriesLabels.map((l, i) => {
        const v = r.values[i];
        const b = h("span", { class: `bar s${i}`, "data-series": l, "data-label": r.label, "data-value": v ?? "" },
          h("span", { class: "bar-fill" }), h("span", { class: "bar-text" }, fmt[i](v)));
        b.firstChild.style.width = max[i] && v ? `${(100 * v) / max[i]}%` : "0";
        return b;
      })))) : h("p", { class: "muted" }, "no requests in this range"),
  );
}
