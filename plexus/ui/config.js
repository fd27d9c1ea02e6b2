// Config: the applied YAML (secrets masked) in an editor with line numbers; Save posts it and
// shows each validation error next to the line its key path names, then the reload result.
import { api } from "./api.js";
import { datetime, h, message } from "./util.js";

export function mount(el) {
  const gutter = h("div", { class: "gutter", id: "config-gutter", "aria-hidden": "true" });
  const notes = h("div", { class: "notes", id: "config-notes", "aria-hidden": "true" });
  const text = h("textarea", { id: "config-text", spellcheck: "false", autocomplete: "off", wrap: "off", "aria-label": "config YAML" });
  const save = h("button", { type: "button", id: "config-save" }, "Save and apply");
  const reload = h("button", { type: "button", id: "config-reload" }, "Reload from gateway");
  const status = h("div", { id: "config-status" });
  const errors = h("ul", { id: "config-errors", class: "errors" });
  const info = h("p", { class: "muted", id: "config-info" });
  el.append(
    h("div", { class: "toolbar" }, h("h1", {}, "Config"), save, reload), info, status, errors,
    h("div", { class: "editor" }, gutter, h("div", { class: "editor-text" }, text, notes)),
    h("p", { class: "muted small" }, "Secret literals are shown as \"****\" and Save writes exactly what is here: type the real value (or a ${VAR} reference) over each \"****\" before saving."),
  );
  let marks = new Map(); // line number -> [messages]

  function paint() {
    const n = text.value.split("\n").length;
    const frag = document.createDocumentFragment();
    const nfrag = document.createDocumentFragment();
    for (let i = 1; i <= n; i++) {
      const m = marks.get(i);
      frag.append(h("div", { class: m ? "ln err" : "ln", "data-line": i, title: m ? m.join("\n") : null }, String(i)));
      nfrag.append(h("div", { class: m ? "note err" : "note", "data-line": i }, m ? `← ${m.join("; ")}` : ""));
    }
    gutter.replaceChildren(frag);
    notes.replaceChildren(nfrag);
    sync();
  }
  function sync() { gutter.scrollTop = text.scrollTop; notes.style.transform = `translateY(${-text.scrollTop}px)`; }
  text.addEventListener("scroll", sync);
  text.addEventListener("input", () => { if (marks.size) { marks = new Map(); errors.replaceChildren(); } paint(); });

  async function load() {
    message(status, "");
    try {
      text.value = await api("/config", { raw: true });
      marks = new Map();
      errors.replaceChildren();
      paint();
    } catch (e) {
      message(status, e.status === 409 ? "This gateway's config was not loaded from a file." : `Cannot load the config: ${e.message}`);
    }
    try {
      const s = await api("/config/status");
      info.textContent = `${s.path} · applied ${datetime(s.loaded_at)} (${s.source})` +
        (s.last_error ? ` · last failed change ${datetime(s.last_error.time)} (${s.last_error.source})` : "");
    } catch { info.textContent = ""; }
  }

  save.addEventListener("click", async () => {
    errors.replaceChildren();
    marks = new Map();
    const masked = text.value.split("\n").map((l, i) => (/:\s*["']?\*\*\*\*["']?\s*(#.*)?$/.test(l) ? i + 1 : 0)).filter(Boolean);
    if (masked.length) {  // saving "****" would make it the secret (the admin key included)
      for (const line of masked) marks.set(line, ["a masked secret: type the real value or a ${VAR} reference"]);
      message(status, `Not saved: line${masked.length > 1 ? "s" : ""} ${masked.join(", ")} still hold${masked.length > 1 ? "" : "s"} a masked secret "****".`);
      paint();
      return;
    }
    save.disabled = true;
    message(status, "saving…", "muted");
    try {
      const r = await api("/config", { method: "POST", body: text.value });
      message(status, `Saved and applied: ${r.path} (loaded ${datetime(r.loaded_at)}, source ${r.source})`, "ok");
      info.textContent = `${r.path} · applied ${datetime(r.loaded_at)} (${r.source})`;
    } catch (e) {
      const details = (e.body && e.body.details) || [];
      message(status, details.length ? `${e.message}: ${details.length} problem${details.length > 1 ? "s" : ""}; nothing was changed` : `Not saved: ${e.message}`);
      for (const d of details) {
        const line = lineOf(text.value, d.path);
        if (line) marks.set(line, [...(marks.get(line) || []), `${d.path}: ${d.message}`]);
        errors.append(h("li", { "data-line": line || "" },
          line ? h("button", { type: "button", class: "link", onclick: () => goto(line) }, `line ${line}`) : "",
          line ? " " : "", h("code", {}, d.path || "(file)"), `: ${d.message}`));
      }
    } finally {
      save.disabled = false;
      paint();
    }
  });
  reload.addEventListener("click", load);

  function goto(line) {
    const lines = text.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
    text.focus();
    text.setSelectionRange(start, start + lines[line - 1].length);
    const lh = parseFloat(getComputedStyle(text).lineHeight) || 18;
    text.scrollTop = Math.max(0, (line - 3) * lh);
  }

  load();
  return () => {};
}

// The 1-based line a config key path ("models.fast.targets[0].colour") names in YAML text.
// Block style is walked by columns: every line gives entries (a "- " item marker, a "key:"),
// an entry's children are the entries after it that are indented deeper (a key's sequence items
// may also sit at its own column). In flow style ({...}, [...]) or when a part is missing, the
// deepest line found so far. 0 when not even the first part is found.
export function lineOf(yamlText, path) {
  if (!path) return 1;
  const parts = [];
  for (const seg of String(path).split(".")) {
    const m = /^([^[]*)((?:\[\d+\])*)$/.exec(seg);
    if (!m) { parts.push(seg); continue; }
    if (m[1]) parts.push(m[1]);
    for (const i of m[2].matchAll(/\[(\d+)\]/g)) parts.push(Number(i[1]));
  }
  const lines = yamlText.split(/\r?\n/);
  const entries = [];
  lines.forEach((text, line) => {
    let col = text.length - text.trimStart().length;
    let rest = text.slice(col);
    if (!rest || rest[0] === "#") return;
    while (rest[0] === "-" && (rest.length === 1 || rest[1] === " ")) {
      entries.push({ line, col, kind: "item" });
      const after = rest.slice(1);
      const pad = after.length - after.trimStart().length;
      col += 1 + pad;
      rest = after.trimStart();
      if (!rest) return;
    }
    const m = /^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s:#{[][^:#]*?)\s*:(\s|$)/.exec(rest);
    if (m) entries.push({ line, col, kind: "key", name: m[1].replace(/^["']|["']$/g, "") });
    else entries.push({ line, col, kind: "scalar" });
  });
  const childrenOf = (k) => {  // the direct children of entry k (-1: the document)
    const e = k < 0 ? { col: -1, kind: "key" } : entries[k];
    const out = [];
    let col = null;
    for (let j = k + 1; j < entries.length; j++) {
      const x = entries[j];
      if (!(x.col > e.col || (e.kind === "key" && k >= 0 && x.kind === "item" && x.col === e.col))) break;
      if (col === null) col = x.col;
      if (x.col === col) out.push(j);
    }
    return out;
  };
  let k = -1, found = 0;
  for (const part of parts) {
    const kids = childrenOf(k);
    let hit;
    if (typeof part === "number") hit = kids.filter((j) => entries[j].kind === "item")[part];
    else hit = kids.find((j) => entries[j].kind === "key" && entries[j].name === String(part));
    if (hit === undefined) return found;
    k = hit;
    found = entries[k].line + 1;
  }
  return found;
}
