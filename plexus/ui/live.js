// Live: usage records as they are recorded (GET /events, SSE), newest on top.
import { api, sse } from "./api.js";
import { h, money, ms, num, time, tableRow } from "./util.js";
import { showTrace } from "./trace.js";

const MAX_ROWS = 500;
// At most this many records per second come to the page (GET /events?max_rate=): the rest are
// counted by the gateway and shown as a number, so an open page never costs it a JSON document
// per request under load.
const MAX_RATE = 20;

export const COLUMNS = [
  { label: "time", get: (r) => time(r.time) },
  { label: "key", get: (r) => r.key },
  { label: "dialect → provider", get: (r) => `${r.dialect || "?"} → ${r.provider_type || "?"}` },
  { label: "alias → target", get: (r) => `${r.alias || "?"} → ${r.provider ? `${r.provider}/${r.model}` : "?"}` },
  { label: "status", get: (r) => h("span", { class: `status ${r.status === "success" ? "ok" : "bad"}` }, `${r.http_status ?? ""} ${r.status}`) },
  { label: "tokens in/out", cls: "n", get: (r) => `${num(r.input_tokens)} / ${num(r.output_tokens)}` },
  { label: "TTFT", cls: "n", get: (r) => ms(r.ttft_ms) },
  { label: "duration", cls: "n", get: (r) => ms(r.duration_ms) },
  { label: "cost", cls: "n", get: (r) => money(r.cost) },
];

function text(r) {
  return [r.key, r.dialect, r.provider_type, r.alias, r.provider, r.model, r.status, r.http_status, r.id, r.error]
    .filter((v) => v !== null && v !== undefined).join(" ").toLowerCase();
}

export function mount(el) {
  const ctl = new AbortController();
  const rows = [];            // newest first
  const held = [];            // arrived while paused
  let paused = false;
  const state = h("span", { class: "muted", id: "live-state" }, "connecting…");
  const skippedNote = h("span", { class: "muted", id: "live-skipped" }, "");
  let skipped = 0;
  const filter = h("input", { type: "search", id: "live-filter", placeholder: "filter (alias, key, provider, status…)" });
  const pause = h("button", { id: "live-pause", type: "button" }, "Pause");
  const body = h("tbody", { id: "live-rows" });
  const detail = h("section", { id: "live-detail", class: "detail" });
  el.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Live"), filter, pause, state, skippedNote),
    h("div", { class: "scroll" }, h("table", { class: "grid", id: "live-table" },
      h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { class: c.cls }, c.label)))), body)),
    detail,
  );

  const matches = (r) => !filter.value || text(r).includes(filter.value.trim().toLowerCase());
  const open = (r, tr) => {
    for (const x of body.querySelectorAll("tr.selected")) x.classList.remove("selected");
    tr.classList.add("selected");
    showTrace(detail, r);
  };
  const rowFor = (r) => { const tr = tableRow(COLUMNS, r, open); tr.dataset.id = r.id; return tr; };
  const render = () => body.replaceChildren(...rows.filter(matches).map(rowFor));
  const add = (r, top = true) => {
    if (top) rows.unshift(r); else rows.push(r);
    if (rows.length > MAX_ROWS) rows.length = MAX_ROWS;
    if (!matches(r)) return;
    if (top) body.prepend(rowFor(r)); else body.append(rowFor(r));
    while (body.children.length > MAX_ROWS) body.lastChild.remove();
  };
  filter.addEventListener("input", render);
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.classList.toggle("on", paused);
    if (!paused) { for (const r of held.splice(0).reverse()) add(r); state.textContent = "live"; }
  });

  // the last records first (when usage storage is on), then the stream
  api("/usage", { query: { limit: 50 } }).then((page) => {
    const seen = new Set(rows.map((r) => r.id));
    for (const r of page.data) if (!seen.has(r.id)) add(r, false);
  }).catch(() => {});

  (async () => {
    let delay = 500;
    while (!ctl.signal.aborted) {
      try {
        await sse(`/events?max_rate=${MAX_RATE}`, (type, data) => {
          if (type === "skipped") {
            skipped += JSON.parse(data).count;
            skippedNote.textContent = `${num(skipped)} more not shown (at most ${MAX_RATE} per second)`;
            return;
          }
          if (type !== "usage") return;
          const r = JSON.parse(data);
          if (paused) { held.unshift(r); state.textContent = `paused (${held.length} waiting)`; } else add(r);
        }, ctl.signal, () => { state.textContent = paused ? "paused" : "live"; });
        state.textContent = "stream ended; reconnecting";
        delay = 500;
      } catch (e) {
        if (ctl.signal.aborted) return;
        state.textContent = `disconnected (${e.message}); retrying`;
      }
      if (ctl.signal.aborted) return;
      await new Promise((ok) => setTimeout(ok, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();

  return () => ctl.abort();
}
