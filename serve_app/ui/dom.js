// Building DOM nodes. Text is always inserted as text (text nodes, textContent), never parsed as
// HTML: transcripts, file names and server messages cannot inject markup.
import { t } from "./i18n.js";

/**
 * h("button", {class: "x", i18n: "live.start", on: {click}}, "child", node)
 * - `i18n`: a dictionary key; the node's text follows the language switch (data-i18n).
 * - `on`: event listeners; `dataset`: data-* attributes; other keys are attributes, except
 *   `value`, `checked`, `disabled`, `hidden` which are set as properties.
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "on") {
      for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "i18n") {
      node.dataset.i18n = value;
      node.textContent = t(value);
    } else if (["value", "checked", "disabled", "hidden"].includes(key)) {
      node[key] = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, ...children);
  return node;
}

export function append(node, ...children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

/** Seconds as m:ss.s (or h:mm:ss past an hour), for segment times. */
export function clock(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const ss = h ? String(Math.floor(sec)).padStart(2, "0") : sec.toFixed(1).padStart(4, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** A duration for people: "42 s", "3 min 5 s", "2 h 10 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return "–";
  const s = Math.round(Number(seconds));
  if (s < 60) return t("unit.s", { n: s });
  if (s < 3600) return t("unit.min_s", { m: Math.floor(s / 60), s: s % 60 });
  return t("unit.h_min", { h: Math.floor(s / 3600), m: Math.round((s % 3600) / 60) });
}

export function hours(seconds) {
  return t("unit.hours", { n: ((Number(seconds) || 0) / 3600).toFixed(3) });
}

export function bytes(n) {
  const units = ["B", "kB", "MB", "GB"];
  let v = Number(n) || 0;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString(document.documentElement.lang);
}

/** Save a Blob under `filename` through a temporary link. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Show a message in a live region (role=status or role=alert): text, or tr(key, vars), which
 * is translated again when the language changes. */
export function say(node, message, kind = "info") {
  if (message && typeof message === "object") {
    node.dataset.i18n = message.key;
    node.dataset.i18nVars = JSON.stringify(message.vars || {});
    node.textContent = t(message.key, message.vars);
  } else {
    delete node.dataset.i18n;
    delete node.dataset.i18nVars;
    node.textContent = message || "";
  }
  node.dataset.kind = kind;
  node.hidden = !node.textContent;
}
