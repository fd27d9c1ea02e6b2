// Providers: each (provider, model) target's health, its cooldown with the time left and a
// clear button, and its recent error rate and latency. GET /cooldowns and GET /targets (the
// gateway's in-memory counters: cheap to poll, unlike a usage summary over a range); "recent"
// is the difference between the latest read and the oldest one kept (up to RECENT seconds).
import { api } from "./api.js";
import { h, message, ms, num, table } from "./util.js";

const RECENT = 60; // seconds of reads kept for "recent"

// the q-quantile (0..1) of a histogram's counts (per bucket, the last past every bound), as the
// upper bound of the bucket it falls in, interpolated inside that bucket
function quantile(counts, bounds, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (!total) return null;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    if (seen + counts[i] >= q * total) {
      const lo = i ? bounds[i - 1] : 0, hi = i < bounds.length ? bounds[i] : bounds[bounds.length - 1];
      return counts[i] ? lo + (hi - lo) * ((q * total - seen) / counts[i]) : hi;
    }
    seen += counts[i];
  }
  return bounds[bounds.length - 1];
}

function recentOf(now, old, bounds) {
  const n = bounds.length + 1;     // bucket counts (the array ends with the sum)
  const d = (k) => now[k].slice(0, n).map((v, i) => v - (old ? old[k][i] : 0));
  const requests = now.requests - (old ? old.requests : 0);
  const errors = now.errors - (old ? old.errors : 0);
  const dur = d("duration");
  return { requests, errors, duration_ms_p50: quantile(dur, bounds, 0.5), duration_ms_p95: quantile(dur, bounds, 0.95) };
}

export function mount(el) {
  const status = h("div", { id: "providers-status" });
  const out = h("div", { id: "providers-out", class: "scroll" });
  const clearAll = h("button", { type: "button", id: "clear-all" }, "Clear all cooldowns");
  el.append(h("div", { class: "toolbar" }, h("h1", {}, "Providers"), clearAll,
    h("span", { class: "muted", id: "providers-window" }, "error rate and latency: since the page opened")), status, out);
  let rows = [];
  const reads = [];   // [{time, byKey}] of /targets, oldest first, RECENT seconds at most

  async function clear(path, query) {
    try {
      const r = await api(path, { method: "DELETE", query });
      message(status, `cleared ${r.cleared} cooldown${r.cleared === 1 ? "" : "s"}`, "ok");
    } catch (e) { message(status, `clear failed: ${e.message}`); }
    load();
  }
  clearAll.addEventListener("click", () => clear("/cooldowns"));

  const left = (r) => Math.max(0, (r.until_unix || 0) - Date.now() / 1000);
  const health = (r) => r.cooling ? ["cooling", "bad"] : r.failures ? ["degraded", "warn"] : ["healthy", "ok"];
  const cols = [
    { label: "provider", get: (r) => r.provider },
    { label: "model", get: (r) => r.model },
    { label: "health", get: (r) => { const [t, c] = health(r); return h("span", { class: `status ${c}` }, t); } },
    { label: "cooldown left", cls: "n", get: (r) => r.cooling ? h("span", { class: "countdown", "data-until": r.until_unix }, `${left(r).toFixed(0)} s`) : "" },
    { label: "failures", cls: "n", get: (r) => r.failures ? `${r.failures} (last ${r.last_status ?? "?"})` : "0" },
    { label: "requests", cls: "n", get: (r) => r.recent ? r.recent.requests : 0 },
    { label: "error rate", cls: "n", get: (r) => r.recent && r.recent.requests ? `${num((100 * r.recent.errors) / r.recent.requests, 1)} %` : "" },
    { label: "p50 / p95", cls: "n", get: (r) => r.recent ? `${ms(r.recent.duration_ms_p50)} / ${ms(r.recent.duration_ms_p95)}` : "" },
    { label: "TTFB avg", cls: "n", get: (r) => r.ttfb_ewma ? ms(r.ttfb_ewma * 1000) : "" },
    { label: "", get: (r) => r.cooling || r.failures ? h("button", { type: "button", class: "clear", "data-provider": r.provider, "data-model": r.model,
        onclick: (ev) => { ev.stopPropagation(); clear(`/cooldowns/${encodeURIComponent(r.provider)}`, { model: r.model }); } }, "Clear") : "" },
  ];

  async function load() {
    try {
      const [cd, targets] = await Promise.all([api("/cooldowns"), api("/targets").catch(() => null)]);
      const recent = {};
      if (targets) {
        const byKey = Object.fromEntries(targets.data.map((t) => [`${t.provider}\u0000${t.model}`, t]));
        reads.push({ time: targets.time, byKey });
        while (reads.length > 2 && targets.time - reads[0].time > RECENT) reads.shift();
        const old = reads.length > 1 ? reads[0] : null;
        for (const [k, t] of Object.entries(byKey)) recent[k] = recentOf(t, old && old.byKey[k], targets.buckets_ms);
        document.getElementById("providers-window").textContent = old
          ? `error rate and latency: last ${Math.round(targets.time - old.time)} s` : "error rate and latency: since start";
      }
      rows = cd.data.map((r) => ({ ...r, recent: recent[`${r.provider}\u0000${r.model}`] }));
      rows.sort((a, b) => (b.cooling - a.cooling) || a.provider.localeCompare(b.provider) || String(a.model).localeCompare(String(b.model)));
      out.replaceChildren(table(cols, rows, { id: "providers-table", empty: "no targets configured" }));
    } catch (e) { message(status, `Cannot load cooldowns: ${e.message}`); }
  }
  load();
  const poll = setInterval(() => { if (!document.hidden) load(); }, 5000);
  const tick = setInterval(() => {
    for (const c of out.querySelectorAll(".countdown")) c.textContent = `${Math.max(0, c.dataset.until - Date.now() / 1000).toFixed(0)} s`;
  }, 1000);
  return () => { clearInterval(poll); clearInterval(tick); };
}
