// DOM helpers. Everything shown comes from the cluster (names, messages, log lines), so text is
// only ever set as text (no string is ever parsed as HTML), and the CSP forbids inline code besides.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const AGE_REFRESH_MS = 5000;   // how often a view redraws only so that its ages move

// "12s", "4m", "3h", "2d" as kubectl prints ages.
export function age(timestamp, now = Date.now()) {
  if (!timestamp) return "";
  const sec = Math.max(0, Math.floor((now - Date.parse(timestamp)) / 1000));
  if (sec < 120) return `${sec}s`;
  if (sec < 7200) return `${Math.floor(sec / 60)}m`;
  if (sec < 172800) return `${Math.floor(sec / 3600)}h`;
  return `${Math.floor(sec / 86400)}d`;
}

export function clock(ms) {
  const d = new Date(ms);
  return d.toISOString().slice(11, 23);
}

// A table whose rows carry data-key, so tests and people can find one object's row.
export function table(columns, rows, { empty = "none" } = {}) {
  return h("table", { class: "grid" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))));
}

export function row(key, cells, attrs = {}) {
  return h("tr", { ...attrs, dataset: { key, ...(attrs.dataset || {}) } }, cells.map((c) => h("td", {}, c)));
}

// An API failure as the API server said it: "403 Forbidden: deployments.apps "web" is forbidden: ...".
export function errorBox(err) {
  if (!err) return null;
  const code = err.status ? `${err.status} ${err.reason || ""}`.trim() + ": " : "";
  return h("div", { class: "error", role: "alert" }, code + (err.message || String(err)));
}

export function pill(text, kind) {
  return h("span", { class: `pill ${kind || ""}` }, text);
}

// Redraw at most once per animation frame however many watch events arrive.
export function throttled(fn) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; fn(); });
  };
}

export function copyButton(text) {
  return h("button", { class: "copy", type: "button", title: "copy", onclick: () => navigator.clipboard?.writeText(text) }, "⧉");
}

// What an action did, or the API server's refusal, in a message that stays until dismissed
// (errors) or for a few seconds (success): nothing an action does goes unreported.
export function notify(message, kind = "ok") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", "aria-live": "polite" });
    document.body.append(box);
  }
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message,
    h("button", { type: "button", class: "close", onclick: () => el.remove() }, "×"));
  box.append(el);
  if (kind !== "error") setTimeout(() => el.remove(), 6000);
}

export function notifyError(what, err) {
  const code = err && err.status ? `${err.status} ${err.reason || ""}`.trim() + ": " : "";
  notify(`${what} failed: ${code}${err && err.message ? err.message : err}`, "error");
}
