// Usage: requests and errors over time, tokens and cost by alias / provider / key, latency and
// TTFT per target, tokens per second; each chart with a table of the same numbers and CSV export.
import { api } from "./api.js";
import { barChart, timeChart } from "./charts.js";
import { csv, datetime, download, h, message, money, ms, num, table } from "./util.js";

const RANGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
const MAX_PAGES = 20; // 20 000 records for the time series; the summaries count everything

export function mount(el) {
  let charts = [];
  const range = h("select", { id: "usage-range" },
    h("option", { value: "1h" }, "last hour"), h("option", { value: "24h" }, "last day"),
    h("option", { value: "7d" }, "last week"), h("option", { value: "custom" }, "custom"));
  const from = h("input", { type: "datetime-local", id: "usage-from", hidden: true });
  const to = h("input", { type: "datetime-local", id: "usage-to", hidden: true });
  const group = h("select", { id: "usage-group" },
    h("option", { value: "alias" }, "by alias"), h("option", { value: "provider" }, "by provider"),
    h("option", { value: "key" }, "by key"));
  const refresh = h("button", { type: "button", id: "usage-refresh" }, "Refresh");
  const status = h("div", { id: "usage-status" });
  const out = h("div", { id: "usage-out" });
  el.append(h("div", { class: "toolbar" }, h("h1", {}, "Usage"), range, from, to, group, refresh), status, out);

  const bounds = () => {
    const now = Date.now() / 1000;
    if (range.value !== "custom") return { since: now - RANGES[range.value], until: now + 1 };
    const f = from.value ? new Date(from.value).getTime() / 1000 : now - 86400;
    const t = to.value ? new Date(to.value).getTime() / 1000 : now + 1;
    return { since: f, until: t };
  };

  async function load() {
    const { since, until } = bounds();
    const q = { since: since.toFixed(3), until: until.toFixed(3) };
    message(status, "loading…", "muted");
    let records = [], total = 0, sums;
    try {
      const [g, target] = await Promise.all([
        api("/usage/summary", { query: { ...q, group_by: group.value } }),
        api("/usage/summary", { query: { ...q, group_by: "target" } }),
      ]);
      sums = { g: g.data, target: target.data };
      for (let p = 0; p < MAX_PAGES; p++) {
        const page = await api("/usage", { query: { ...q, limit: 1000, offset: p * 1000 } });
        records = records.concat(page.data);
        total = page.total;
        if (records.length >= total || !page.data.length) break;
      }
    } catch (e) {
      message(status, e.status === 409 ? "Usage storage is off in this gateway's config (usage: {enabled: false})." : `Cannot load usage: ${e.message}`);
      return;
    }
    message(status, records.length < total ? `showing the newest ${num(records.length)} of ${num(total)} records over time (the tables count all)` : "", "muted");
    for (const c of charts) c.destroy();
    charts = [];
    out.replaceChildren(
      timeSection(records, since, until),
      groupSection(sums.g, group.value),
      latencySection(sums.target),
    );
  }

  function timeSection(records, since, until) {
    const span = until - since;
    const step = span <= 3700 ? 60 : span <= 86500 ? 900 : span <= 7 * 86400 + 100 ? 7200 : Math.ceil(span / 100);
    const start = Math.floor(since / step) * step;
    const n = Math.max(1, Math.ceil((until - start) / step));
    const xs = [], req = [], err = [], tps = [], tpsN = [];
    for (let i = 0; i < n; i++) { xs.push(start + i * step); req.push(0); err.push(0); tps.push(0); tpsN.push(0); }
    for (const r of records) {
      const i = Math.floor((r.time - start) / step);
      if (i < 0 || i >= n) continue;
      req[i]++;
      if (r.status !== "success") err[i]++;
      if (r.tokens_per_second) { tps[i] += r.tokens_per_second; tpsN[i]++; }
    }
    const mean = tps.map((s, i) => (tpsN[i] ? s / tpsN[i] : null));
    const c1 = timeChart("requests and errors over time", xs, [
      { label: "requests", values: req, color: "#3b82f6", fill: "rgba(59,130,246,.15)" },
      { label: "errors", values: err, color: "#ef4444", fill: "rgba(239,68,68,.2)" }]);
    const c2 = timeChart("tokens per second over time", xs, [{ label: "tokens/s (mean)", values: mean, color: "#10b981" }], { height: 160 });
    charts.push(c1, c2);
    const rows = xs.map((x, i) => ({ t: x, requests: req[i], errors: err[i], tps: mean[i] })).filter((r) => r.requests);
    const cols = [
      { label: "from", get: (r) => datetime(r.t), csv: (r) => new Date(r.t * 1000).toISOString() },
      { label: "requests", cls: "n", get: (r) => r.requests },
      { label: "errors", cls: "n", get: (r) => r.errors },
      { label: "tokens/s", cls: "n", get: (r) => num(r.tps, 1), csv: (r) => r.tps ?? "" },
    ];
    return section("Requests and errors over time", "usage-time", [c1.el, h("h3", { class: "sub" }, "Tokens per second"), c2.el], cols, rows, "usage-over-time.csv", `${records.length} requests, ${records.filter((r) => r.status !== "success").length} errors`);
  }

  function groupSection(rows, by) {
    const cols = [
      { label: by, get: (r) => r[by] ?? "(none)" },
      { label: "requests", cls: "n", get: (r) => r.requests },
      { label: "errors", cls: "n", get: (r) => r.errors },
      { label: "input tokens", cls: "n", get: (r) => num(r.input_tokens), csv: (r) => r.input_tokens },
      { label: "output tokens", cls: "n", get: (r) => num(r.output_tokens), csv: (r) => r.output_tokens },
      { label: "cost", cls: "n", get: (r) => money(r.cost), csv: (r) => r.cost },
      { label: "tokens/s", cls: "n", get: (r) => num(r.tokens_per_second, 1), csv: (r) => r.tokens_per_second },
    ];
    const chart = barChart(`tokens and cost by ${by}`, rows.map((r) => ({
      label: String(r[by] ?? "(none)"),
      values: [r.requests, (r.input_tokens || 0) + (r.output_tokens || 0), r.cost],
    })), ["requests", "tokens", "cost"], [num, num, money]);
    return section(`Requests, tokens and cost ${by === "key" ? "by key" : `by ${by}`}`, "usage-groups", [chart], cols, rows, `usage-by-${by}.csv`);
  }

  function latencySection(rows) {
    const cols = [
      { label: "target", get: (r) => r.target ?? "(none)" },
      { label: "requests", cls: "n", get: (r) => r.requests },
      { label: "p50 duration", cls: "n", get: (r) => ms(r.duration_ms_p50), csv: (r) => r.duration_ms_p50 },
      { label: "p95 duration", cls: "n", get: (r) => ms(r.duration_ms_p95), csv: (r) => r.duration_ms_p95 },
      { label: "p50 TTFT", cls: "n", get: (r) => ms(r.ttft_ms_p50), csv: (r) => r.ttft_ms_p50 },
      { label: "p95 TTFT", cls: "n", get: (r) => ms(r.ttft_ms_p95), csv: (r) => r.ttft_ms_p95 },
      { label: "tokens/s", cls: "n", get: (r) => num(r.tokens_per_second, 1), csv: (r) => r.tokens_per_second },
    ];
    const chart = barChart("latency per target", rows.map((r) => ({
      label: String(r.target ?? "(none)"),
      values: [r.duration_ms_p50, r.duration_ms_p95, r.ttft_ms_p50, r.ttft_ms_p95],
    })), ["p50", "p95", "TTFT p50", "TTFT p95"], [ms, ms, ms, ms]);
    return section("Latency and time to first token per target", "usage-latency", [chart], cols, rows, "usage-latency.csv");
  }

  function section(title, id, chartEls, cols, rows, file, note) {
    return h("section", { class: "panel", id },
      h("div", { class: "toolbar" }, h("h2", {}, title), note ? h("span", { class: "muted" }, note) : "",
        h("button", { type: "button", class: "csv", onclick: () => download(file, csv(cols, rows)) }, "CSV")),
      chartEls,
      h("div", { class: "scroll" }, table(cols, rows, { empty: "no requests in this range" })));
  }

  range.addEventListener("change", () => { from.hidden = to.hidden = range.value !== "custom"; if (range.value !== "custom") load(); });
  for (const x of [from, to, group]) x.addEventListener("change", load);
  refresh.addEventListener("click", load);
  load();
  const timer = setInterval(() => { if (!document.hidden && range.value !== "custom") load(); }, 30000);
  return () => { clearInterval(timer); for (const c of charts) c.destroy(); };
}
