// Small DOM and formatting helpers shared by the pages.
export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export const dash = "–";
export function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(v)) return dash;
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}
export function ms(v) { return v === null || v === undefined ? dash : `${num(v, v < 10 ? 1 : 0)} ms`; }
export function money(v) {
  if (v === null || v === undefined) return dash;
  return "$" + (v >= 1 ? v.toFixed(2) : v.toPrecision(3));
}
export function time(t) {
  if (!t) return dash;
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false });
}
export function datetime(t) {
  if (!t) return dash;
  const d = new Date(t * 1000);
  return d.toLocaleString([], { hour12: false });
}

// A table from column specs [{label, get(row) -> text, cls?}], rows; returns the <table>.
export function table(cols, rows, { onRow, empty = "nothing yet", id } = {}) {
  const body = h("tbody");
  const t = h("table", { class: "grid", id }, h("thead", {}, h("tr", {}, cols.map((c) => h("th", { class: c.cls }, c.label)))), body);
  if (!rows.length) body.append(h("tr", { class: "empty" }, h("td", { colspan: cols.length }, empty)));
  for (const r of rows) body.append(tableRow(cols, r, onRow));
  return t;
}
export function tableRow(cols, r, onRow) {
  const tr = h("tr", {}, cols.map((c) => {
    const v = c.get(r);
    return h("td", { class: c.cls }, v instanceof Node ? v : (v === null || v === undefined ? dash : String(v)));
  }));
  if (onRow) { tr.classList.add("clickable"); tr.addEventListener("click", () => onRow(r, tr)); }
  return tr;
}

// CSV text of the same columns (the raw values: c.csv(row) or c.get(row)).
export function csv(cols, rows) {
  const q = (v) => {
    if (v === null || v === undefined) return "";
    const s = v instanceof Node ? v.textContent : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [cols.map((c) => q(c.label)).join(","), ...rows.map((r) => cols.map((c) => q(c.csv ? c.csv(r) : c.get(r))).join(","))].join("\r\n") + "\r\n";
}
export function download(name, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function message(el, text, kind = "error") {
  el.replaceChildren(text ? h("p", { class: kind, role: kind === "error" ? "alert" : "status" }, text) : "");
}
