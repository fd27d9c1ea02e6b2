// Debug: the capture switch and its filters, the captured requests, and one capture side by side.
import { api } from "./api.js";
import { h, message, ms, table, time } from "./util.js";
import { recordView, traceView } from "./trace.js";

const list = (s) => { const v = s.split(",").map((x) => x.trim()).filter(Boolean); return v.length ? v : null; };

export function mount(el) {
  const enabled = h("input", { type: "checkbox", id: "debug-enabled" });
  const aliases = h("input", { type: "text", id: "debug-aliases", placeholder: "all aliases (or: fast, smart)" });
  const keys = h("input", { type: "text", id: "debug-keys", placeholder: "all keys (or: team-a)" });
  const apply = h("button", { type: "button", id: "debug-apply" }, "Apply");
  const refresh = h("button", { type: "button", id: "debug-refresh" }, "Refresh");
  const clear = h("button", { type: "button", id: "debug-clear" }, "Clear captures");
  const state = h("span", { class: "muted", id: "debug-state" });
  const status = h("div", { id: "debug-status" });
  const out = h("div", { class: "scroll", id: "debug-list" });
  const detail = h("section", { class: "detail", id: "debug-detail" });
  el.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Debug"), refresh, clear),
    h("form", { class: "settings", onsubmit: (e) => e.preventDefault() },
      h("label", { class: "check" }, enabled, " capture requests"),
      h("label", {}, "aliases ", aliases), h("label", {}, "keys ", keys), apply, state),
    status, out, detail,
  );

  const show = (s) => {
    enabled.checked = s.enabled;
    aliases.value = (s.aliases || []).join(", ");
    keys.value = (s.keys || []).join(", ");
    state.textContent = `${s.enabled ? "on" : "off"} · ${s.count} of ${s.max_entries} kept`;
  };
  const cols = [
    { label: "time", get: (r) => time(r.time) }, { label: "id", get: (r) => r.id },
    { label: "key", get: (r) => r.key }, { label: "alias", get: (r) => r.alias },
    { label: "target", get: (r) => r.provider ? `${r.provider}/${r.model}` : null },
    { label: "status", get: (r) => h("span", { class: `status ${r.status === "success" ? "ok" : "bad"}` }, `${r.http_status ?? ""} ${r.status ?? ""}`) },
    { label: "attempts", cls: "n", get: (r) => r.attempts }, { label: "duration", cls: "n", get: (r) => ms(r.duration_ms) },
  ];
  async function open(r, tr) {
    for (const x of out.querySelectorAll("tr.selected")) x.classList.remove("selected");
    if (tr) tr.classList.add("selected");
    detail.replaceChildren(h("p", { class: "muted" }, "loading…"));
    try {
      const t = await api(`/debug/logs/${encodeURIComponent(r.id)}`);
      detail.replaceChildren(h("div", { class: "toolbar" }, h("h2", {}, `Capture ${t.id}`),
        h("button", { type: "button", class: "link", onclick: () => detail.replaceChildren() }, "close")),
        recordView(t.usage), traceView(t));
    } catch (e) { message(detail, `Cannot load capture ${r.id}: ${e.message}`); }
  }
  async function load() {
    try {
      const [s, logs] = await Promise.all([api("/debug"), api("/debug/logs")]);
      show(s);
      out.replaceChildren(table(cols, logs.data, { onRow: open, id: "debug-table", empty: s.enabled ? "no request captured yet" : "capture is off" }));
    } catch (e) { message(status, `Cannot load debug state: ${e.message}`); }
  }
  apply.addEventListener("click", async () => {
    try {
      show(await api("/debug", { method: "POST", body: { enabled: enabled.checked, aliases: list(aliases.value), keys: list(keys.value) } }));
      message(status, `capture ${enabled.checked ? "on" : "off"}`, "ok");
    } catch (e) { message(status, `Not applied: ${e.message}`); }
  });
  refresh.addEventListener("click", load);
  clear.addEventListener("click", async () => {
    try { const r = await api("/debug/logs", { method: "DELETE" }); message(status, `cleared ${r.cleared}`, "ok"); } catch (e) { message(status, e.message); }
    detail.replaceChildren();
    load();
  });
  const id = location.hash.split("/")[1];
  load().then(() => { if (id) open({ id }); });
  const poll = setInterval(() => { if (!document.hidden) load(); }, 5000);
  return () => clearInterval(poll);
}
