// One request in full: its usage record and, when one was captured, its debug trace side by
// side (client request, upstream request, upstream response, client response; streams as lists
// of events).
import { ApiError, api } from "./api.js";
import { h, money, ms, num, datetime } from "./util.js";

export async function showTrace(el, record) {
  const id = record.id;
  el.replaceChildren(h("h2", {}, `Request ${id}`), h("p", { class: "muted" }, "loading…"));
  let trace = null, note = "";
  try {
    trace = await api(`/debug/logs/${encodeURIComponent(id)}`);
  } catch (e) {
    note = e instanceof ApiError && e.status === 404 ? "No debug trace was captured for this request (turn capture on in Debug)." : `Trace: ${e.message}`;
  }
  const rec = (trace && trace.usage) || record;
  el.replaceChildren(
    h("div", { class: "toolbar" }, h("h2", {}, `Request ${id}`),
      h("button", { type: "button", class: "link", onclick: () => el.replaceChildren() }, "close")),
    recordView(rec),
    trace ? traceView(trace) : h("p", { class: "muted", id: "trace-note" }, note),
  );
  el.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

export function recordView(r) {
  if (!r) return "";
  const fields = [
    ["time", datetime(r.time)], ["key", r.key], ["client", `${r.dialect} ${r.endpoint || ""}`],
    ["alias", r.alias], ["target", r.provider ? `${r.provider}/${r.model} (${r.provider_type})` : null],
    ["status", `${r.http_status ?? ""} ${r.status}`], ["attempts", r.attempts], ["stream", r.stream],
    ["tokens in/out", `${num(r.input_tokens)} / ${num(r.output_tokens)}`], ["cached", num(r.cached_tokens)],
    ["TTFT", ms(r.ttft_ms)], ["duration", ms(r.duration_ms)], ["tokens/s", num(r.tokens_per_second, 1)],
    ["cost", money(r.cost)], ["finish", r.finish_reason], ["error", r.error],
  ];
  return h("dl", { class: "record" }, fields.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v)))));
}

export function traceView(t) {
  const ups = t.upstream || [];
  const col = (title, parts) => h("div", { class: "trace-col" }, h("h3", {}, title), parts);
  return h("div", { class: "trace", id: "trace" },
    col("Client request", message(t.client_request, true)),
    col("Upstream request", ups.length ? ups.map((u, i) => [ups.length > 1 ? h("h4", {}, `attempt ${i + 1}: ${u.provider}`) : "", message(u.request, true)]) : h("p", { class: "muted" }, "none")),
    col("Upstream response", ups.length ? ups.map((u, i) => [ups.length > 1 ? h("h4", {}, `attempt ${i + 1}: ${u.provider}`) : "", message(u.response, false)]) : h("p", { class: "muted" }, "none")),
    col("Client response", message(t.client_response, false)),
  );
}

function message(m, isRequest) {
  if (!m) return h("p", { class: "muted" }, "none");
  const head = isRequest ? `${m.method || "POST"} ${m.target || m.url || ""}` : `HTTP ${m.status ?? "?"}`;
  const headers = m.headers || [];
  const ctype = (headers.find(([k]) => k.toLowerCase() === "content-type") || [])[1] || "";
  return [
    h("p", { class: "mono head" }, head),
    h("details", {}, h("summary", {}, `${headers.length} headers`),
      h("table", { class: "headers" }, headers.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v))))),
    body(m.body || "", ctype),
    m.body_truncated ? h("p", { class: "error" }, `body cut at capture (${num(m.body_bytes)} bytes in all)`) : "",
  ];
}

function body(text, ctype) {
  if (!text) return h("p", { class: "muted" }, "(empty body)");
  const isStream = ctype.includes("event-stream") || /^(data|event):/m.test(text.slice(0, 200));
  if (isStream) {
    const events = text.split(/\r?\n\r?\n/).filter((s) => s.trim());
    return h("ol", { class: "events" }, events.map((ev) => h("li", {}, h("pre", {}, prettyEvent(ev)))));
  }
  return h("pre", { class: "body" }, pretty(text));
}

function prettyEvent(ev) {
  return ev.split(/\r?\n/).map((line) => {
    const m = /^data: ?(.*)$/.exec(line);
    return m ? "data: " + pretty(m[1]) : line;
  }).join("\n");
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}
