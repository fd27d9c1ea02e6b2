// Providers: each (provider, model) target's health, its cooldown with the time left and a
// clear button, and its recent error rate and latency (GET /cooldowns, /usage/summary).
import { api } from "./api.js";
import { h, message, ms, num, table } from "./util.js";

const RECENT = 15 * 60; // "recent": the last 15 minutes

export function mount(el) {
  const status = h("div", { id: "providers-status" });
  const out = h("div", { id: "providers-out", class: "scroll" });
  const clearAll = h("button", { type: "button", id: "clear-all" }, "Clear all cooldowns");
  el.append(h("div", { class: "toolbar" }, h("h1", {}, "Providers"), clearAll,
    h("span", { class: "muted" }, "error rate and latency: last 15 minutes")), status, out);
  let rows = [];

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
      const since = (Date.now() / 1000 - RECENT).toFixed(3);
      const [cd, byProvider] = await Promise.all([
        api("/cooldowns"),
        api("/usage/summary", { query: { group_by: "provider", since } }).catch(() => ({ data: [] })),
      ]);
      const recent = Object.fromEntries(byProvider.data.map((s) => [s.provider, s]));
      rows = cd.data.map((r) => ({ ...r, recent: recent[r.provider] }));
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
