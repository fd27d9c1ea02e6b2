// The management API from the browser: the admin key (sessionStorage) goes in x-admin-key on
// every call, including the events stream (fetch + a stream reader, since EventSource cannot
// send headers).
const KEY = "plexus-admin-key";
export const BASE = "/v0/management";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (k) => sessionStorage.setItem(KEY, k);
export const clearKey = () => sessionStorage.removeItem(KEY);

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(path, { method = "GET", body, query, raw = false, key } = {}) {
  const url = new URL(BASE + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const headers = { "x-admin-key": key || getKey() || "" };
  if (body !== undefined && typeof body !== "string") {
    headers["content-type"] = "application/json";
    body = JSON.stringify(body);
  } else if (typeof body === "string") {
    headers["content-type"] = "application/yaml";
  }
  const r = await fetch(url, { method, headers, body, cache: "no-store" });
  if (r.status === 401 && !key) onUnauthorized();
  if (!r.ok) {
    let err = null;
    try { err = await r.json(); } catch { /* not JSON */ }
    throw new ApiError(r.status, err);
  }
  if (raw) return r.text();
  return r.json();
}

// Consume an SSE stream; calls onEvent(type, data) per event. Returns when the stream ends or
// signal aborts.
export async function sse(path, onEvent, signal, onOpen) {
  const r = await fetch(BASE + path, { headers: { "x-admin-key": getKey() || "", accept: "text/event-stream" },
                                       signal, cache: "no-store" });
  if (r.status === 401) { onUnauthorized(); throw new ApiError(401, null); }
  if (!r.ok || !r.body) throw new ApiError(r.status, null);
  if (onOpen) onOpen();
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "", type = "", data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
      if (line === "") {
        if (data.length) onEvent(type || "message", data.join("\n"));
        type = ""; data = [];
      } else if (line[0] === ":") {
        // comment (": connected", ": ping")
      } else {
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        let v = i < 0 ? "" : line.slice(i + 1);
        if (v[0] === " ") v = v.slice(1);
        if (field === "event") type = v;
        else if (field === "data") data.push(v);
      }
    }
  }
}
